#!/bin/sh
# tests/fuzz/run.sh SECONDS — build every libFuzzer target and run each for SECONDS.
#
# Run from the repository root (or anywhere: it changes there). Each target is built
# with clang, libFuzzer, ASan and UBSan (UB aborts) into build-fuzz/ (FUZZ_BUILD=dir
# overrides it), linking only the broker sources it needs, and runs on a copy of its
# seed corpus (tests/fuzz/corpus/<name>/ is never written). Crash inputs land in
# build-fuzz/artifacts/, logs in build-fuzz/logs/. Prints one line per target, then
# "fuzz: N passed, M failed"; exits 1 when any target failed to build or crashed.
# FUZZ_TARGETS="paging form" runs only those targets; FUZZ_JOBS=N runs N at a time
# (default: one per CPU).
set -u

secs=${1:-60}
case $secs in
'' | *[!0-9]*) echo "usage: $0 SECONDS" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.." || exit 2

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: 0 passed, 0 failed (clang not found)"
    exit 0
fi

out=${FUZZ_BUILD:-build-fuzz} # another folder keeps concurrent runs apart
cflags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=gnu11"
cflags="$cflags -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -Ibroker $(pkg-config --cflags jansson openssl)"
libs="$(pkg-config --libs jansson openssl) -pthread"

# The broker sources each target needs.
sources() {
    c=broker/core
    case $1 in
    orgid) echo "$c/orgid.c" ;;
    form) echo "$c/form.c $c/buf.c $c/crypto.c" ;;
    cookie) echo "$c/cookie.c" ;;
    webhook_sig) echo "$c/webhook_sig.c $c/crypto.c" ;;
    seal_open | keyring) echo "$c/seal.c $c/crypto.c" ;;
    stripe_resp) echo "$c/stripe_resp.c $c/crypto.c" ;;
    proxy_rules) echo "$c/proxy_rules.c" ;;
    http1_resp) echo "$c/http1_resp.c $c/crypto.c" ;;
    record) echo "$c/record.c $c/mode.c $c/stripe_resp.c $c/buf.c $c/crypto.c" ;;
    config | return_url) echo "broker/config.c $c/seal.c $c/crypto.c $c/form.c $c/buf.c $c/netaddr.c" ;;
    log_line) echo "broker/log.c $c/buf.c $c/crypto.c" ;;
    netaddr) echo "$c/netaddr.c" ;;
    timefmt) echo "$c/timefmt.c" ;;
    paging) echo "$c/paging.c $c/form.c $c/buf.c $c/crypto.c $c/timefmt.c" ;;
    esac
}

targets=${FUZZ_TARGETS:-"orgid form cookie webhook_sig seal_open stripe_resp record config keyring return_url log_line netaddr proxy_rules http1_resp timefmt paging"}
passed=0
failed=0
mkdir -p "$out/artifacts" "$out/logs"

# one_target NAME: build and run fuzz_NAME; its one line, ending "ok" or "FAILED", goes to
# $out/logs/fuzz_NAME.result
one_target() {
    name=fuzz_$1
    log=$out/logs/$name.log
    res=$out/logs/$name.result
    # shellcheck disable=SC2046,SC2086 # the flag lists are meant to split
    if ! clang $cflags -o "$out/$name" "tests/fuzz/$name.c" $(sources "$1") $libs \
        >"$out/logs/$name.build.log" 2>&1; then
        echo "$name: build failed (see $out/logs/$name.build.log) FAILED" >"$res"
        return
    fi
    corpus=$out/corpus/$1
    rm -rf "$corpus"
    mkdir -p "$corpus"
    cp tests/fuzz/corpus/"$1"/* "$corpus"/ 2>/dev/null
    "$out/$name" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$name-" "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    if [ "$rc" -eq 0 ]; then
        echo "$name: ok, ${execs:-0} execs, cov ${cov:-0}" >"$res"
    else
        echo "$name: FAILED (exit $rc), ${execs:-0} execs, cov ${cov:-0}; see $log" >"$res"
    fi
}

# FUZZ_JOBS targets at a time (default: one per CPU), reported in the list's order
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
running=0
for t in $targets; do
    rm -f "$out/logs/fuzz_$t.result"
    one_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
done
wait
for t in $targets; do
    line=$(cat "$out/logs/fuzz_$t.result" 2>/dev/null || echo "fuzz_$t: no result FAILED")
    echo "$line"
    case $line in
    *FAILED*) failed=$((failed + 1)) ;;
    *) passed=$((passed + 1)) ;;
    esac
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
