#!/usr/bin/env python3
"""run.py — the fault and abuse suites' runner.

    python3 tests/fault/run.py [-k SUBSTRING] [--timeout S] [--budget S] [-v] [MODULE…]

Discovers tests/fault/test_*.py and runs each module in its own worker process with
the integration runner's machinery (tests/it/run.py: one session per module, so a hung
test is killed together with every redis, simulator, broker and wrk it started). Prints
PASS/FAIL per test and ends with `fault: N passed, M failed`; exit status 1 when
anything failed or nothing ran. A sanitizer build (BROKER_BIN containing "asan") gets
its stderr scanned for AddressSanitizer/UBSan reports at the end.
"""

import argparse
import glob
import os
import shutil
import signal
import sys
import tempfile
import time

FAULT_DIR = os.path.dirname(os.path.abspath(__file__))
IT_DIR = os.path.join(os.path.dirname(FAULT_DIR), "it")
sys.path.insert(0, IT_DIR)

import run as itrun  # noqa: E402  (tests/it/run.py)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("FAULT_TEST_TIMEOUT", "60")))
    ap.add_argument("--budget", type=float, default=float(os.environ.get("FAULT_BUDGET", "0")))
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("modules", nargs="*")
    args = ap.parse_args()

    modules = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(FAULT_DIR, "test_*.py")))
    if args.modules:
        wanted = [os.path.basename(m)[:-3] if m.endswith(".py") else os.path.basename(m) for m in args.modules]
        modules = [m for m in modules if m in wanted]

    # the workers import our modules by name: put this folder on their path
    os.environ["PYTHONPATH"] = FAULT_DIR + (os.pathsep + os.environ["PYTHONPATH"]
                                            if os.environ.get("PYTHONPATH") else "")
    bin_path = os.environ.get("BROKER_BIN", "build/stripe-token-broker")
    sanitized = "asan" in bin_path or os.environ.get("IT_SANITIZER") == "1"
    log_dir = tempfile.mkdtemp(prefix="stb-fault-")
    print(f"# broker: {bin_path}; logs: {log_dir}", flush=True)

    results = itrun.Results()
    results.budget_exhausted = False
    start = time.monotonic()
    deadline_at = start + args.budget if args.budget > 0 else float("inf")
    signal.signal(signal.SIGTERM, itrun._on_signal)
    signal.signal(signal.SIGINT, itrun._on_signal)
    try:
        itrun.run_all(modules, args, results, deadline_at, log_dir)
    except itrun.Interrupted as e:
        if itrun.CURRENT["proc"] is not None:
            itrun._killpg(itrun.CURRENT["proc"])
        results.fail("run", f"interrupted by {e}")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    if sanitized and results.passed + results.failed > 0:
        hits = itrun.sanitizer_scan(log_dir)
        if hits:
            results.fail("test_broker_stderr_has_no_sanitizer_reports",
                         f"{len(hits)} sanitizer line(s), first: {hits[0]}")
        else:
            results.ok("test_broker_stderr_has_no_sanitizer_reports", "0.00")

    total = results.passed + results.failed
    print(f"# {time.monotonic() - start:.1f}s", flush=True)
    if results.failed or args.keep_logs:
        print(f"# logs kept in {log_dir}", flush=True)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(f"fault: {results.passed} passed, {results.failed} failed", flush=True)
    return 1 if results.failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
