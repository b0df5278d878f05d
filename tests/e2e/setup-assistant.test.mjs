// setup-assistant.test.mjs — the setup assistant walked as a Salesforce admin walks it, in
// headless Chromium (Debian's /usr/bin/chromium driven by playwright-core; never a browser
// download of playwright's own).
//
// Run by tests/e2e/run.sh, which starts Redis, the Stripe simulator (consent mode) and the broker
// and passes their addresses in E2E_* variables. This file starts a tiny HTTP server on
// E2E_SF_PORT that stands in for Salesforce (the return_url of the authorize links; the broker's
// BROKER_RETURN_URL_ALLOW lists its origin).
//
// Every page of the broker that a test reaches is screenshotted into E2E_OUT and, in contexts
// with JavaScript, checked with axe-core (no serious or critical violation; none at all of the
// rules named in STRICT_RULES). The narrow-screen test also checks for horizontal scrolling at
// 375 px. Results: one "ok"/"not ok" line per test, a summary JSON for run.sh (E2E_RESULT), and
// an axe report (E2E_OUT/axe-report.json).
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { mkdirSync, writeFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');
const AXE_PATH = require.resolve('axe-core/axe.min.js');

const env = (name, dflt) => {
  const v = process.env[name] ?? dflt;
  if (v === undefined) {
    console.error(`e2e: ${name} is not set (run this through tests/e2e/run.sh)`);
    process.exit(2);
  }
  return v;
};
const BROKER = env('E2E_BROKER_URL').replace(/\/$/, '');
const SIM = env('E2E_SIM_URL').replace(/\/$/, '');
const SF_PORT = Number(env('E2E_SF_PORT'));
const ADMIN_TOKEN = env('E2E_ADMIN_TOKEN');
const OUT = env('E2E_OUT');
const RESULT = env('E2E_RESULT', '');
const CHROMIUM = env('E2E_CHROMIUM', '/usr/bin/chromium');
const SF_ORIGIN = `http://127.0.0.1:${SF_PORT}`;
const STEP_TIMEOUT_MS = 15000;

// axe: tags run, and rules that must have no violation at any impact.
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'];
const STRICT_RULES = new Set([
  'color-contrast', 'label', 'label-title-only', 'form-field-multiple-labels', 'heading-order',
  'page-has-heading-one', 'empty-heading', 'html-has-lang', 'html-lang-valid', 'document-title',
  'landmark-one-main', 'landmark-unique', 'landmark-no-duplicate-banner', 'landmark-no-duplicate-main',
  'landmark-banner-is-top-level', 'landmark-main-is-top-level', 'region', 'link-name', 'button-name',
  'list', 'listitem', 'definition-list', 'dlitem', 'meta-viewport', 'duplicate-id-aria', 'aria-allowed-role',
]);

mkdirSync(OUT, { recursive: true });

// ===== tiny harness =====
const results = [];
const axeReport = [];
let shotNo = 0;

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false, error: String(e && e.stack || e) });
    console.log(`not ok - ${name} (${Date.now() - t0} ms)\n    ${String(e && e.message || e).split('\n').join('\n    ')}`);
  }
}

// ===== the Salesforce stand-in (return_url target) =====
const sfHits = [];
const sf = createServer((req, res) => {
  sfHits.push(req.url);
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end('<!doctype html><html lang="en"><head><title>Salesforce</title></head><body><main>' +
    '<h1>Salesforce (stand-in)</h1><p id="back">Back in Salesforce.</p></main></body></html>');
});
await new Promise((resolve, reject) => {
  sf.once('error', reject);
  sf.listen(SF_PORT, '127.0.0.1', resolve);
});

// ===== the broker's JSON API (what Salesforce and the operator call) =====
async function api(method, p, body) {
  const res = await fetch(BROKER + p, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

// 15-character org id → the canonical 18-character form (Salesforce's case-safe suffix).
function org18(id15) {
  const a = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ012345';
  let s = '';
  for (let i = 0; i < 3; i++) {
    let v = 0;
    for (let j = 0; j < 5; j++) if (/[A-Z]/.test(id15[i * 5 + j])) v |= 1 << j;
    s += a[v];
  }
  return id15 + s;
}

async function authorizeLink(org, mode, returnUrl) {
  const body = { mode };
  if (returnUrl) body.return_url = returnUrl;
  const r = await api('POST', `/v1/orgs/${org}/authorize-links`, body);
  assert(r.status === 201 && r.json && typeof r.json.url === 'string',
    `authorize-links answered ${r.status}: ${r.text}`);
  assert(r.json.url.startsWith(`${BROKER}/setup?ticket=`), `unexpected link ${r.json.url}`);
  return r.json.url;
}

// ===== browser helpers =====
const userDataDir = mkdtempSync(path.join(tmpdir(), 'stb-e2e-chromium-'));
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // playwright gives every launch a fresh temporary profile (--user-data-dir); the cache and
  // crash dumps go to our own fresh folder too.
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--disk-cache-dir=${path.join(userDataDir, 'cache')}`, `--crash-dumps-dir=${path.join(userDataDir, 'crash')}`],
  timeout: 30000,
});

async function newContext(opts = {}) {
  // axe is injected with page.addScriptTag, which the broker's CSP (no inline script) would
  // block: contexts that run axe bypass the CSP; the CSP test and the no-JavaScript test do not.
  const { strictCSP, ...rest } = opts;
  const ctx = await browser.newContext({
    viewport: { width: 1100, height: 900 },
    bypassCSP: rest.javaScriptEnabled !== false && !strictCSP,
    ...rest,
  });
  ctx.setDefaultTimeout(STEP_TIMEOUT_MS);
  ctx.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  return ctx;
}

function slug(s) {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

// shot(page, test, step, {axe, narrow}): screenshot, then accessibility and layout checks.
async function shot(page, testName, step, { axe = true, narrow = false } = {}) {
  shotNo += 1;
  const file = path.join(OUT, `${String(shotNo).padStart(2, '0')}-${slug(testName)}-${slug(step)}.png`);
  await page.screenshot({ path: file, fullPage: true });
  if (narrow) {
    const { sw, cw } = await page.evaluate(() => ({
      sw: document.documentElement.scrollWidth, cw: document.documentElement.clientWidth,
    }));
    assert(sw <= 375, `${step}: horizontal scrolling at 375 px (scrollWidth ${sw}, clientWidth ${cw})`);
  }
  if (axe) await axeCheck(page, `${testName} / ${step}`);
  return file;
}

// Rules that must actually have been evaluated (and passed) on every broker page.
const MUST_PASS = ['color-contrast', 'html-has-lang', 'page-has-heading-one', 'landmark-one-main', 'region',
  'document-title', 'heading-order'];

async function axeRun(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: AXE_PATH });
  return page.evaluate(async (tags) => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return {
      violations: r.violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5),
      })),
      passes: r.passes.map((p) => p.id),
    };
  }, AXE_TAGS);
}

async function axeCheck(page, where) {
  const res = await axeRun(page);
  axeReport.push({ page: where, url: page.url(), violations: res.violations, rules_passed: res.passes.length,
    passed: res.passes });
  const missing = MUST_PASS.filter((id) => !res.passes.includes(id) && !res.violations.some((v) => v.id === id));
  assert(missing.length === 0, `axe did not evaluate ${missing.join(', ')} on ${where}`);
  const bad = res.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical' || STRICT_RULES.has(v.id));
  const other = res.violations.filter((v) => !bad.includes(v));
  for (const v of other) console.log(`    axe note (${where}): ${v.id} [${v.impact}] ${v.help} at ${v.nodes.join(', ')}`);
  assert(bad.length === 0, `axe violations on ${where}:\n` +
    bad.map((v) => `  ${v.id} [${v.impact}] ${v.help} at ${v.nodes.join(', ')}`).join('\n'));
}

function checkPageHeaders(resp, where) {
  assert(resp, `${where}: no response`);
  const h = resp.headers();
  assert(/default-src 'none'/.test(h['content-security-policy'] || ''), `${where}: no CSP header`);
  assert((h['x-frame-options'] || '').toUpperCase() === 'DENY', `${where}: X-Frame-Options is not DENY`);
  assert(h['referrer-policy'] === 'no-referrer', `${where}: Referrer-Policy is not no-referrer`);
  assert(/no-store/.test(h['cache-control'] || ''), `${where}: Cache-Control is not no-store`);
}

async function text(page) {
  return (await page.locator('main').innerText()).replace(/\s+/g, ' ');
}

// The broker's setup page: org and mode as the admin sees them.
async function expectSetupPage(page, org, mode) {
  assert(new URL(page.url()).pathname === '/setup', `expected /setup, at ${page.url()}`);
  assert(!/ticket=/.test(page.url()), 'the ticket stayed in the address bar');
  const t = await text(page);
  assert(t.includes(org18(org)), `the org id ${org18(org)} is not shown`);
  assert(await page.locator(`#mode-${mode}`).isChecked(), `mode ${mode} is not preselected`);
  assert(await page.locator('#authorize').isVisible(), 'no Authorize with Stripe button');
  return t;
}

// The simulator's consent page: check what it asks, set the account id, click Approve/Decline.
async function onConsent(page, mode, decision, acct) {
  await page.waitForURL((u) => u.href.startsWith(`${SIM}/oauth/authorize`));
  const u = new URL(page.url());
  assert(u.searchParams.get('client_id') === (mode === 'live' ? 'ca_live_sim' : 'ca_test_sim'),
    `authorize went out with client_id ${u.searchParams.get('client_id')} for ${mode} mode`);
  assert(u.searchParams.get('scope') === 'read_write', 'the authorize request does not ask for read_write');
  assert(u.searchParams.get('redirect_uri') === `${BROKER}/oauth/callback`, 'wrong redirect_uri');
  const body = await page.locator('body').innerText();
  assert(body.includes(`${mode} mode`), `the consent page does not say ${mode} mode`);
  if (acct) await page.fill('#account', acct);
  return body;
}

async function clickAndWait(page, selector, urlPredicate) {
  await Promise.all([page.waitForURL(urlPredicate, { waitUntil: 'load' }), page.click(selector)]);
}

const isSetup = (u) => u.href === `${BROKER}/setup`;

// ===== the tests =====

// The full path, desktop, JavaScript on: the way the connector's "Stripe OM Setup" is walked.
async function walkHappyPath(ctxOpts, label, { org, acct, secret, axe, narrow }) {
  const ctx = await newContext(ctxOpts);
  const page = await ctx.newPage();
  try {
    const returnUrl = `${SF_ORIGIN}/lightning/n/Stripe_Setup?org=${org}`;
    const link = await authorizeLink(org, 'test', returnUrl);

    // 1. open the link: the ticket is swapped for a session and the address bar is cleaned
    const resp = await page.goto(link);
    assert(resp.status() === 200, `setup page answered ${resp.status()}`);
    checkPageHeaders(resp, 'setup page');
    let t = await expectSetupPage(page, org, 'test');
    assert(/Not connected/i.test(t), 'a new org should show "Not connected"');
    assert(await page.locator('h1').count() === 1, 'the page needs exactly one h1');
    await shot(page, label, 'setup opened (test mode preselected)', { axe, narrow });

    // 2. switch the mode, as with the connector's live-mode toggle
    await page.check('#mode-live');
    assert(await page.locator('#mode-live').isChecked(), 'could not switch to live mode');
    await shot(page, label, 'live mode chosen', { axe: false, narrow });

    // 3. Authorize with Stripe → the simulator's consent page (live mode)
    await clickAndWait(page, '#authorize', (u) => u.href.startsWith(`${SIM}/oauth/authorize`));
    await onConsent(page, 'live', 'approve', acct);
    await shot(page, label, 'stripe consent page', { axe: false, narrow: false });

    // 4. Approve → back on the setup page, Connected, with the account id
    await clickAndWait(page, '#approve', isSetup);
    t = await text(page);
    assert(t.includes('Connected'), 'the setup page does not say Connected');
    assert(t.includes(acct), `the setup page does not show the Stripe account ${acct}`);
    assert(await page.locator('#mode-live').isChecked(), 'the chosen live mode is not kept after authorizing');
    await shot(page, label, 'connected', { axe, narrow });

    const conns = await api('GET', `/v1/orgs/${org}/connections`);
    const live = (conns.json?.connections || []).find((c) => c.mode === 'live');
    assert(live && live.status === 'connected' && live.stripe_user_id === acct,
      `the broker did not store the live connection: ${conns.text}`);
    const tok = await api('GET', `/v1/orgs/${org}/access-token?mode=live`);
    assert(tok.status === 200 && tok.json.stripe_user_id === acct && tok.json.livemode === true,
      `getAccessToken(live) answered ${tok.status}: ${tok.json?.error?.code}`);

    // 5. store the webhook signing secret
    await page.fill('#signing_secret', secret);
    await clickAndWait(page, '#save-secret', isSetup);
    t = await text(page);
    assert(/Live webhook secret\s*Stored/i.test(t), 'the page does not confirm the stored live webhook secret');
    await shot(page, label, 'webhook secret stored', { axe, narrow });
    const ws = await api('GET', `/v1/orgs/${org}/webhook-secrets/live`);
    assert(ws.status === 200 && ws.json.configured === true, `webhook secret not stored: ${ws.text}`);

    // 6. Finish → back in Salesforce (the return_url)
    const before = sfHits.length;
    assert(await page.locator('#finish').getAttribute('href') === returnUrl, 'Finish does not point at the return_url');
    await clickAndWait(page, '#finish', (u) => u.href === returnUrl);
    assert(page.url() === returnUrl, `Finish went to ${page.url()}`);
    assert(sfHits.length > before, 'the Salesforce stand-in was not reached');
    assert((await page.locator('#back').innerText()).includes('Back in Salesforce'), 'not on the Salesforce page');
    await shot(page, label, 'back in salesforce', { axe: false, narrow: false });

    // switching back to test mode needs no new authorization (minted from the live one)
    const testTok = await api('GET', `/v1/orgs/${org}/access-token?mode=test`);
    assert(testTok.status === 200 && testTok.json.stripe_user_id === acct && testTok.json.livemode === false,
      `getAccessToken(test) after a live authorization answered ${testTok.status}`);
  } finally {
    await ctx.close();
  }
}

await test('happy path: open link, switch mode, authorize, approve, Connected, signing secret, Finish', () =>
  walkHappyPath({}, 'happy', { org: '00D5e000000E2E1', acct: 'acct_1E2eHappyPath', secret: 'whsec_e2eHappySecret1', axe: true }));

await test('declined: the admin declines on Stripe; the page says so and what to do; nothing stored', async () => {
  const ctx = await newContext();
  const page = await ctx.newPage();
  try {
    const org = '00D5e000000E2E2';
    await page.goto(await authorizeLink(org, 'test'));
    await expectSetupPage(page, org, 'test');
    await clickAndWait(page, '#authorize', (u) => u.href.startsWith(`${SIM}/oauth/authorize`));
    await onConsent(page, 'test', 'decline');
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url().startsWith(`${BROKER}/oauth/callback`)),
      page.click('#decline'),
    ]);
    await page.waitForLoadState('load');
    // the contract asks for a status below 500; declining is not an error: the page itself, 200
    assert(resp.status() === 200, `the declined page answered ${resp.status()}`);
    checkPageHeaders(resp, 'declined page');
    const t = await text(page);
    assert(/declined/i.test(t), 'the page does not say the authorization was declined');
    assert(/nothing was (connected|stored)/i.test(t), 'the page does not say nothing was stored');
    assert(await page.getByRole('link', { name: /setup page/i }).count() >= 1, 'no way back to the setup page');
    await shot(page, 'declined', 'declined page');
    const conns = await api('GET', `/v1/orgs/${org}/connections`);
    assert(conns.status === 200 && conns.json.connections.length === 0, `a declined authorization stored something: ${conns.text}`);
    // the way back works: the session still holds, still not connected
    await clickAndWait(page, 'main a[href="/setup"]', isSetup);
    const t2 = await expectSetupPage(page, org, 'test');
    assert(/Not connected/i.test(t2), 'after declining, the org should still be "Not connected"');
    await shot(page, 'declined', 'back on setup page');
  } finally {
    await ctx.close();
  }
});

await test('expired link: a used ticket and an unknown ticket get a 400 page that says what to do', async () => {
  const org = '00D5e000000E2E3';
  const link = await authorizeLink(org, 'test');
  const first = await newContext();
  try {
    const p1 = await first.newPage();
    const r1 = await p1.goto(link);
    assert(r1.status() === 200, `first use answered ${r1.status()}`);
  } finally {
    await first.close();
  }
  const ctx = await newContext();
  const page = await ctx.newPage();
  try {
    const r2 = await page.goto(link);
    assert(r2.status() === 400, `a used link answered ${r2.status()}, expected 400`);
    checkPageHeaders(r2, 'used-link page');
    let t = await text(page);
    assert(/already used|expired/i.test(t), 'the page does not say the link was used or expired');
    assert(/new (setup )?link/i.test(t) && /Salesforce/.test(t), 'the page does not say to open a new link from Salesforce');
    await shot(page, 'expired', 'used link');

    const bogus = `${BROKER}/setup?ticket=${'A'.repeat(43)}`;
    const r3 = await page.goto(bogus);
    assert(r3.status() === 400, `an unknown ticket answered ${r3.status()}, expected 400`);
    t = await text(page);
    assert(/already used|expired|not known/i.test(t), 'the unknown-ticket page does not say why');
    await shot(page, 'expired', 'unknown ticket');
  } finally {
    await ctx.close();
  }
});

await test('no session: /setup without a link gets a 401 page that says what to do', async () => {
  const ctx = await newContext();
  const page = await ctx.newPage();
  try {
    const r = await page.goto(`${BROKER}/setup`);
    assert(r.status() === 401, `/setup without a session answered ${r.status()}`);
    const t = await text(page);
    assert(/session/i.test(t) && /Salesforce/.test(t), 'the 401 page does not explain what to do');
    await shot(page, 'no-session', 'setup session needed');
  } finally {
    await ctx.close();
  }
});

await test('self-test: the accessibility check catches low contrast, a missing label and a skipped heading', async () => {
  const ctx = await newContext();
  const page = await ctx.newPage();
  try {
    await page.goto(`${BROKER}/setup`);
    await page.evaluate(() => {
      const m = document.querySelector('main');
      m.insertAdjacentHTML('beforeend', '<h4>Skipped levels</h4><input type="text" name="x">');
      const p = document.createElement('p');
      p.textContent = 'Hard to read';
      p.style.color = '#cccccc';
      m.appendChild(p);
    });
    const res = await axeRun(page);
    const ids = res.violations.map((v) => v.id);
    for (const id of ['color-contrast', 'label', 'heading-order']) {
      assert(ids.includes(id), `axe missed ${id} (found: ${ids.join(', ') || 'nothing'})`);
    }
  } finally {
    await ctx.close();
  }
});

await test('bad signing secret: the error page says what to paste', async () => {
  const ctx = await newContext();
  const page = await ctx.newPage();
  try {
    const org = '00D5e000000E2E4';
    await page.goto(await authorizeLink(org, 'test'));
    await expectSetupPage(page, org, 'test');
    await page.fill('#signing_secret', 'not a secret');
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${BROKER}/setup/webhook-secret`),
      page.click('#save-secret'),
    ]);
    await page.waitForLoadState('load');
    assert(resp.status() === 400, `a malformed secret answered ${resp.status()}`);
    const t = await text(page);
    assert(/whsec_/.test(t), 'the error page does not say what a signing secret looks like');
    await shot(page, 'bad-secret', 'secret not saved');
    const ws = await api('GET', `/v1/orgs/${org}/webhook-secrets/test`);
    assert(ws.json && ws.json.configured === false, 'a malformed secret was stored');
  } finally {
    await ctx.close();
  }
});

await test('without JavaScript: the whole flow completes', () =>
  walkHappyPath({ javaScriptEnabled: false }, 'no-js',
    { org: '00D5e000000E2E5', acct: 'acct_1E2eNoScript', secret: 'whsec_e2eNoScriptSecret', axe: false }));

await test('narrow screen (375 px): no horizontal scrolling, accessible, the flow completes', async () => {
  await walkHappyPath({ viewport: { width: 375, height: 740 }, deviceScaleFactor: 2, hasTouch: true, isMobile: true },
    'narrow', { org: '00D5e000000E2E6', acct: 'acct_1E2eNarrowScreen000000000', secret: 'whsec_e2eNarrowSecret', axe: true, narrow: true });
  // the error and declined pages too
  const ctx = await newContext({ viewport: { width: 375, height: 740 }, isMobile: true });
  const page = await ctx.newPage();
  try {
    await page.goto(`${BROKER}/setup?ticket=${'B'.repeat(43)}`);
    await shot(page, 'narrow', 'expired link', { axe: true, narrow: true });
    await page.goto(`${BROKER}/oauth/callback?error=access_denied&error_description=x`);
    await shot(page, 'narrow', 'declined', { axe: true, narrow: true });
  } finally {
    await ctx.close();
  }
});

await test('the pages obey their own CSP (no inline script or style) and their stylesheet loads', async () => {
  const ctx = await newContext({ strictCSP: true });
  const page = await ctx.newPage();
  const complaints = [];
  page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) complaints.push(m.text()); });
  page.on('pageerror', (e) => complaints.push(String(e)));
  try {
    const org = '00D5e000000E2E7';
    for (const url of [await authorizeLink(org, 'test'), `${BROKER}/setup?ticket=${'C'.repeat(43)}`,
      `${BROKER}/oauth/callback?error=access_denied`]) {
      await page.goto(url);
      const styled = await page.evaluate(() => getComputedStyle(document.querySelector('header')).backgroundColor);
      assert(styled !== 'rgba(0, 0, 0, 0)', `the stylesheet did not apply on ${page.url()}`);
    }
    assert(complaints.length === 0, `CSP complaints:\n  ${complaints.join('\n  ')}`);
  } finally {
    await ctx.close();
  }
});

// ===== report =====
await browser.close();
sf.close();
rmSync(userDataDir, { recursive: true, force: true });
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
const axePages = axeReport.length;
const axeViolations = axeReport.reduce((n, r) => n + r.violations.length, 0);
writeFileSync(path.join(OUT, 'axe-report.json'), JSON.stringify(axeReport, null, 2) + '\n');
console.log(`axe: ${axePages} page checks, ${axeViolations} violations of any impact (report: ${path.join(OUT, 'axe-report.json')})`);
console.log(`screenshots: ${shotNo} in ${OUT}`);
if (RESULT) writeFileSync(RESULT, JSON.stringify({ passed, failed, results }, null, 2));
process.exit(failed === 0 ? 0 : 1);
