// scan-flows.mjs — Lightning Flow Scanner (@flow-scanner/lightning-flow-scanner-core, pinned in
// package-lock.json) over every Flow of deploy/salesforce, with its default rules.
//
//   node tests/salesforce/scan-flows.mjs     (Node 22; sf-check.sh runs it)
// A rule that occurs is a failure unless ALLOWED below names that rule and element, with why.
// Self-test: a copy of each flow with its fault connectors removed must trip MissingFaultPath.
// Prints PASS/FAIL lines and "scan: N passed, M failed"; exit 1 on any failure.
import pkg from "@flow-scanner/lightning-flow-scanner-core";
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const { parse, scan } = pkg;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const FLOWS = join(ROOT, "deploy", "salesforce", "force-app", "main", "default", "flows");

// rule → element → why it is not a problem
const ALLOWED = {
  HardcodedUrl: {
    ReturnUrl: "the My Domain address is derived from $Api.Partner_Server_URL_620, not written in",
  },
};

let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${!ok && detail ? `: ${detail}` : ""}`);
  return ok;
}

async function scanFile(path) {
  const parsed = await parse([path]);
  const bad = parsed.filter((p) => p.errorMessage);
  if (bad.length) return { error: bad.map((p) => p.errorMessage).join("; ") };
  return { results: scan(parsed).flatMap((s) => s.ruleResults) };
}

const files = readdirSync(FLOWS).filter((f) => f.endsWith(".flow-meta.xml")).sort();
check("flows found", files.length > 0);
for (const f of files) {
  const r = await scanFile(join(FLOWS, f));
  if (!check(`${f}: parsed by the scanner`, !r.error, r.error)) continue;
  check(`${f}: the scanner ran its rules`, r.results.length >= 10, `${r.results.length} rules`);
  for (const rr of r.results) {
    const hits = (rr.details || []).map((d) => d.name);
    const unexplained = hits.filter((n) => !ALLOWED[rr.ruleName]?.[n]);
    check(`${f}: ${rr.ruleName} (${rr.severity})`, !rr.errorMessage && (!rr.occurs || (hits.length && !unexplained.length)),
      rr.errorMessage || unexplained.join(", ") || "occurs");
  }
  // self-test: the same flow without its fault connectors
  const xml = readFileSync(join(FLOWS, f), "utf8");
  const broken = xml.replace(/\s*<faultConnector>[\s\S]*?<\/faultConnector>/g, "");
  const tmp = mkdtempSync(join(tmpdir(), "stb-scan-"));
  try {
    const p = join(tmp, f);
    writeFileSync(p, broken);
    const b = await scanFile(p);
    const hit = (b.results || []).some((rr) => rr.ruleName === "MissingFaultPath" && rr.occurs);
    check(`${f}: self-test: without fault connectors, MissingFaultPath occurs`, broken !== xml && hit);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
console.log(`scan: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
