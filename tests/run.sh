#!/bin/sh
# run.sh — every test stage of the project, ending with ONE line "N passed, M failed".
#
# Run by `make test` from the repository root after the Makefile built build/ and
# build-asan/ (broker + unit test binaries). Stages, in order:
#   1. unit tests: build/unit/test_* and build-asan/unit/test_* (cmocka summaries)
#   2. fuzzers:    sh tests/fuzz/run.sh 5              ("fuzz: N passed, M failed")
#   3. simulator:  python3 tests/fakes/test_stripe_sim.py ("sim: N passed, M failed")
#      OpenAPI:    python3 tests/it/check_openapi.py       ("openapi: N passed, M failed")
#   4. integration against build/stripe-token-broker   ("it: N passed, M failed")
#   5. integration against build-asan/stripe-token-broker (plus a sanitizer-report check)
#   6. any further suite tests/<name>/run.sh (e2e, firstrun, k8s, shape, …) ("<name>: N passed, M failed")
# A stage that crashes, times out or prints no summary counts as one failure. Exit 1
# when anything failed or when no test ran at all. Every stage has a time bound so the
# whole run stays well under 15 minutes.
set -u
cd "$(dirname "$0")/.." || exit 1

PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3

# The build folders (the Makefile's defaults; overridable to test another build).
PLAIN=${PLAIN_BUILD:-build}
ASAN=${ASAN_BUILD:-build-asan}
case "$PLAIN" in
    /*) PLAIN_ABS=$PLAIN ;;
    *) PLAIN_ABS=$(pwd)/$PLAIN ;;
esac

UNIT_TIMEOUT_S=${UNIT_TIMEOUT_S:-120}
FUZZ_TIMEOUT_S=${FUZZ_TIMEOUT_S:-240}
SIM_TIMEOUT_S=${SIM_TIMEOUT_S:-180}
IT_TIMEOUT_S=${IT_TIMEOUT_S:-420}
SUITE_TIMEOUT_S=${SUITE_TIMEOUT_S:-420}

TOTAL_P=0
TOTAL_F=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stb-run.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

add() {
    TOTAL_P=$((TOTAL_P + $1))
    TOTAL_F=$((TOTAL_F + $2))
}

START_S=$(date +%s)
header() {
    printf '\n=== %s === (%ss into the run)\n' "$1" $(($(date +%s) - START_S))
}

# run_stage OUT TIMEOUT CMD…: run CMD with a time bound, show its output as it goes,
# keep a copy in OUT; sets RC to its exit status (124 on timeout).
run_stage() {
    out=$1
    t=$2
    shift 2
    rm -f "$out.rc"
    { timeout -k 15 "$t" "$@"; echo $? >"$out.rc"; } 2>&1 | tee "$out"
    RC=$(cat "$out.rc" 2>/dev/null || echo 1)
    [ "$RC" = 124 ] && echo "(timed out after ${t}s)"
}

# summary_of OUT NAME: the last "NAME: N passed, M failed" line of OUT → P, F.
# Missing line, or a non-zero exit with no failure reported, counts as one failure.
summary_of() {
    line=$(grep -E "^$2: [0-9]+ passed, [0-9]+ failed" "$1" | tail -n 1)
    if [ -z "$line" ]; then
        echo "$2: no summary line (exit status $RC): counted as 1 failure"
        P=0
        F=1
        return
    fi
    P=$(echo "$line" | sed -E 's/^[^:]*: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
    F=$(echo "$line" | sed -E 's/^[^:]*: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
    if [ "$RC" -ne 0 ] && [ "$F" -eq 0 ]; then
        echo "$2: exit status $RC although no test failed: counted as 1 failure"
        F=1
    fi
}

# ===== 1. unit tests =====
header "unit tests (cmocka)"
ran_unit=0
# unit_one B OUT: run test binary B (cmocka output to OUT, its exit status to OUT.rc)
unit_one() {
    CMOCKA_MESSAGE_OUTPUT=stdout timeout -k 5 "$UNIT_TIMEOUT_S" "$1" >"$2" 2>&1
    echo $? >"$2.rc"
}
for src in tests/unit/test_*.c; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    # the plain and the sanitizer binary of a test run at once (most wait on Redis or clocks)
    for dir in "$PLAIN/unit" "$ASAN/unit"; do
        b="$dir/$name"
        o="$TMP/unit.$(echo "$dir" | tr / _).out"
        rm -f "$o" "$o.rc"
        [ -x "$b" ] && unit_one "$b" "$o" &
    done
    wait
    for dir in "$PLAIN/unit" "$ASAN/unit"; do
        b="$dir/$name"
        o="$TMP/unit.$(echo "$dir" | tr / _).out"
        if [ ! -x "$b" ]; then
            echo "$b: missing (tests/unit/$name.c was not built): 1 failed"
            add 0 1
            continue
        fi
        ran_unit=1
        rc=$(cat "$o.rc" 2>/dev/null || echo 1)
        p=$(awk '/^\[  PASSED  \] [0-9]+ test/ { s += $4 } END { print s + 0 }' "$o")
        f=$(awk '/^\[  FAILED  \] [0-9]+ test/ { s += $4 } END { print s + 0 }' "$o")
        note=""
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            f=1
            note=" (exit status $rc: crash, sanitizer report or timeout)"
        fi
        if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
            f=1
            note=" (no test ran)"
        fi
        echo "$b: $p passed, $f failed$note"
        if [ "$f" -gt 0 ]; then
            tail -n 40 "$o" | sed 's/^/    /'
        fi
        add "$p" "$f"
    done
done
[ "$ran_unit" -eq 1 ] || echo "(no unit test binaries)"

# ===== 2. fuzzers =====
if [ -f tests/fuzz/run.sh ]; then
    header "fuzzers (5 s per target)"
    run_stage "$TMP/fuzz.out" "$FUZZ_TIMEOUT_S" sh tests/fuzz/run.sh 5
    summary_of "$TMP/fuzz.out" fuzz
    add "$P" "$F"
fi

# ===== 3. the Stripe simulator's own tests =====
if [ -f tests/fakes/test_stripe_sim.py ]; then
    header "Stripe simulator"
    run_stage "$TMP/sim.out" "$SIM_TIMEOUT_S" "$PYTHON" tests/fakes/test_stripe_sim.py
    summary_of "$TMP/sim.out" sim
    add "$P" "$F"
fi

# ===== the OpenAPI document against the contract =====
if [ -f tests/it/check_openapi.py ]; then
    header "OpenAPI document (proto/openapi.yaml)"
    run_stage "$TMP/openapi.out" 60 "$PYTHON" tests/it/check_openapi.py
    summary_of "$TMP/openapi.out" openapi
    add "$P" "$F"
fi

# ===== 4, 5. integration tests, plain and ASan+UBSan =====
for bin in "$PLAIN/stripe-token-broker" "$ASAN/stripe-token-broker"; do
    header "integration tests against $bin"
    san=0
    [ "$bin" = "$ASAN/stripe-token-broker" ] && san=1
    if [ ! -x "$bin" ]; then
        echo "$bin: missing: counted as 1 failure"
        add 0 1
        continue
    fi
    run_stage "$TMP/it.out" "$IT_TIMEOUT_S" \
        env BROKER_BIN="$bin" IT_BUDGET=$((IT_TIMEOUT_S - 30)) IT_SANITIZER="$san" "$PYTHON" tests/it/run.py
    summary_of "$TMP/it.out" it
    add "$P" "$F"
done

# ===== 6. further suites =====
for script in tests/*/run.sh; do
    [ -f "$script" ] || continue
    name=$(basename "$(dirname "$script")")
    case "$name" in
        unit | it | fuzz | fakes | bench | soak) continue ;;
    esac
    header "$name"
    t=$SUITE_TIMEOUT_S
    [ "$name" = image ] && t=${IMAGE_TIMEOUT_S:-720} # a cold image build takes minutes
    run_stage "$TMP/$name.out" "$t" env BROKER_BIN="$PLAIN_ABS/stripe-token-broker" sh "$script"
    summary_of "$TMP/$name.out" "$name"
    add "$P" "$F"
done

header "summary"
echo "$TOTAL_P passed, $TOTAL_F failed"
if [ "$TOTAL_F" -gt 0 ] || [ $((TOTAL_P + TOTAL_F)) -eq 0 ]; then
    exit 1
fi
exit 0
