#!/bin/sh
# run.sh — the first `make run` on a machine whose -dev packages are not installed yet.
#
# A stage of tests/run.sh (`make test`): ends with "firstrun: N passed, M failed".
# In a scratch copy of the tree, with a separate BUILD folder (the other stages' build/ is not
# touched), pkg-config is masked by a stand-in that fails until the tree's install-deps.sh has
# run (the copy's install-deps.sh runs the real one, then creates the marker that unmasks it).
# That is the state of a fresh machine while the Makefile is parsed: pkg-config finds nothing.
# Then `DEMO_SMOKE=1 make run` must install (a no-op here: the packages are installed), build,
# link, start Redis, the Stripe simulator and the broker, open the setup page, get
# 404 not_connected from getAccessToken, and stop.
# What it proves: no part of the build takes pkg-config's answer from before `deps` ran.
# What it does not: that apt-get itself works on a fresh machine (.ci/run does that).
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $*"; }
summary() { echo "firstrun: $PASS passed, $FAIL failed"; }

REAL_PC=$(command -v pkg-config) || { bad "pkg-config is not installed"; summary; exit 1; }
S=$(mktemp -d "${TMPDIR:-/tmp}/stb-firstrun.XXXXXX")
trap 'rm -rf "$S"' EXIT
trap 'exit 130' INT TERM

# The scratch tree: the sources as they are now, without build outputs or node_modules.
mkdir -p "$S/tree" "$S/bin"
tar -C "$ROOT" --exclude=./.git --exclude='./build*' --exclude=node_modules -cf - . | tar -C "$S/tree" -xf -

MARK="$S/deps-installed"
cat >"$S/bin/pkg-config" <<PC
#!/bin/sh
[ -e "$MARK" ] && exec "$REAL_PC" "\$@"
echo "\$*" >>"$S/masked-calls"
exit 1
PC
chmod +x "$S/bin/pkg-config"
mv "$S/tree/deploy/scripts/install-deps.sh" "$S/tree/deploy/scripts/install-deps.real.sh"
cat >"$S/tree/deploy/scripts/install-deps.sh" <<DEPS
#!/bin/sh
sh "\$(dirname "\$0")/install-deps.real.sh" "\$@" || exit
touch "$MARK"
DEPS
PATH="$S/bin:$PATH"
export PATH
unset BROKER_BIN BROKER_LISTEN BROKER_PUBLIC_URL MAKEFLAGS MAKELEVEL

# 1. the mask works: pkg-config finds nothing before deps
if pkg-config --libs libcurl >/dev/null 2>&1; then
    bad "masked pkg-config still answers: the test would prove nothing"
else
    ok "pkg-config is masked until install-deps.sh has run"
fi

# 2. a plain build while masked stops at once with the one clear message (no link errors)
( cd "$S/tree" && timeout 120 make BUILD="$S/build-masked" all ) >"$S/masked.out" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q "pkg-config cannot find" "$S/masked.out" &&
   ! grep -q "undefined reference" "$S/masked.out"; then
    ok "make without the packages: one clear error naming make deps"
else
    bad "make without the packages (exit $rc):"
    tail -n 15 "$S/masked.out" | sed 's/^/    /'
fi

# 3. the first make run: installs, builds, links, serves, passes the smoke check, stops
[ ! -e "$MARK" ] || rm -f "$MARK"
( cd "$S/tree" && DEMO_SMOKE=1 timeout 300 make -j2 BUILD="$S/build" run ) >"$S/run.out" 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q "smoke check passed" "$S/run.out"; then
    ok "first DEMO_SMOKE=1 make run: built, setup page and 404 not_connected, stopped"
else
    bad "first DEMO_SMOKE=1 make run (exit $rc):"
    grep -v '^{' "$S/run.out" | tail -n 25 | sed 's/^/    /'
fi
if [ -e "$MARK" ]; then ok "make run ran install-deps.sh"; else bad "install-deps.sh did not run"; fi
if [ -x "$S/build/stripe-token-broker" ]; then
    ok "the binary was built in the scratch BUILD folder"
else
    bad "no binary in $S/build"
fi
summary
[ "$FAIL" -eq 0 ]
