#!/usr/bin/env python3
"""run.py — the integration test runner.

    python3 tests/it/run.py [-k SUBSTRING] [--timeout S] [--budget S] [-v] [MODULE…]

Discovers tests/it/test_*.py and their test_* functions (plain functions using assert),
runs each module in its own worker process (a new session, so a hung test can be killed
together with the redis, simulator and broker processes it started), prints
`PASS test_x` / `FAIL test_x: reason` per test and ends with `it: N passed, M failed`.
Exit status 1 when anything failed or nothing ran.

A module may define setup_module() / teardown_module() (once, around its tests) and
setup_function() / teardown_function() (around each test).

BROKER_BIN selects the binary (default build/stripe-token-broker). When it is a
sanitizer build (its path contains "asan", or IT_SANITIZER=1), the broker's stderr logs
are finally scanned for AddressSanitizer / UBSan reports, which count as a failed test.
"""

import argparse
import glob
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True   # keep the source tree clean
IT_DIR = os.path.dirname(os.path.abspath(__file__))
PROTO = "@@IT "
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


# ===== worker: runs one module's tests =====

def worker(module_name, pattern, after, report_fd):
    out = os.fdopen(report_fd, "w", buffering=1)
    # Anything the tests print goes to stderr, never into the report stream.
    sys.stdout = sys.stderr

    def report(*parts):
        out.write(PROTO + " ".join(parts) + "\n")
        out.flush()

    sys.path.insert(0, IT_DIR)
    try:
        mod = __import__(module_name)
    except BaseException as e:  # noqa: BLE001
        report("IMPORTERROR", json.dumps(f"import failed: {e!r}"))
        traceback.print_exc()
        return 1
    tests = [n for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
    if pattern:
        tests = [t for t in tests if any(p in t for p in pattern)]
    if after:
        tests = tests[tests.index(after) + 1:] if after in tests else tests
    # A test that mostly waits on a clock (fn.plain_only = True) runs against the plain
    # binary only: under the sanitizers it would repeat the wait and test no new code.
    if os.environ.get("IT_SANITIZER") == "1":
        tests = [t for t in tests if not getattr(getattr(mod, t), "plain_only", False)]
    report("TESTS", *tests)
    if not tests:
        report("DONE")
        return 0
    setup_error = None
    setup_done = False
    for name in tests:
        # a test that needs longer than --timeout says so: fn.timeout_s = seconds
        report("START", name, str(getattr(getattr(mod, name), "timeout_s", 0)))
        t0 = time.monotonic()
        try:
            if not setup_done:
                setup_done = True
                if hasattr(mod, "setup_module"):
                    try:
                        mod.setup_module()
                    except BaseException as e:  # noqa: BLE001
                        setup_error = f"setup_module failed: {_reason(e)}"
                        traceback.print_exc()
            if setup_error:
                raise RuntimeError(setup_error)
            if hasattr(mod, "setup_function"):
                mod.setup_function()
            try:
                getattr(mod, name)()
            finally:
                if hasattr(mod, "teardown_function"):
                    mod.teardown_function()
            report("PASS", name, f"{time.monotonic() - t0:.2f}")
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            if not (setup_error and isinstance(e, RuntimeError)):
                print(f"--- {name} ---", file=sys.stderr)
                traceback.print_exc()
            report("FAIL", name, json.dumps(_reason(e)))
    if setup_done and not setup_error and hasattr(mod, "teardown_module"):
        try:
            mod.teardown_module()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
    report("DONE")
    return 0


def _reason(e):
    msg = str(e).strip() or type(e).__name__
    tb = traceback.extract_tb(e.__traceback__)
    where = ""
    for fr in reversed(tb):
        if os.path.basename(fr.filename).startswith("test_"):
            where = f" [{os.path.basename(fr.filename)}:{fr.lineno}]"
            break
    if not isinstance(e, AssertionError):
        msg = f"{type(e).__name__}: {msg}"
    msg = " ".join(msg.split())
    if len(msg) > 600:
        msg = msg[:600] + "…"
    return msg + where


# ===== parent: schedules workers, enforces time bounds =====

CURRENT = {"proc": None}


class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.durations = []

    def ok(self, name, dur):
        self.passed += 1
        self.durations.append((float(dur), name))
        print(f"PASS {name}", flush=True)

    def fail(self, name, reason):
        self.failed += 1
        self.failures.append((name, reason))
        print(f"FAIL {name}: {reason}", flush=True)


def run_module(module, args, results, deadline_at, log_dir, verbose):
    after = None
    while True:
        rfd, wfd = os.pipe()
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", module,
               "--report-fd", str(wfd)]
        for p in args.k or []:
            cmd += ["-k", p]
        if after:
            cmd += ["--after", after]
        env = dict(os.environ)
        env["IT_LOG_DIR"] = log_dir
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        errf = open(os.path.join(log_dir, f"{module}.runner.log"), "ab")
        proc = subprocess.Popen(cmd, pass_fds=(wfd,), stdin=subprocess.DEVNULL,
                                stdout=errf if not verbose else None,
                                stderr=errf if not verbose else None,
                                env=env, start_new_session=True,
                                cwd=os.path.dirname(os.path.dirname(IT_DIR)))
        CURRENT["proc"] = proc
        errf.close()
        os.close(wfd)
        buf = b""
        current = None
        test_deadline = time.monotonic() + args.timeout + 60  # import + first setup
        finished = False
        timed_out = None
        eof = False
        while not finished:
            now = time.monotonic()
            limit = min(test_deadline, deadline_at)
            if now >= limit:
                timed_out = "budget" if deadline_at <= test_deadline else "timeout"
                break
            r, _, _ = select.select([rfd], [], [], min(1.0, limit - now))
            if not r:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                eof = True
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.decode("utf-8", "replace")
                if not line.startswith(PROTO):
                    continue
                kind, _, rest = line[len(PROTO):].partition(" ")
                if kind == "START":
                    current, _, own = rest.partition(" ")
                    test_deadline = time.monotonic() + max(args.timeout, float(own or 0))
                elif kind == "PASS":
                    name, _, dur = rest.partition(" ")
                    results.ok(name, dur)
                    after, current = name, None
                elif kind == "FAIL":
                    name, _, reason = rest.partition(" ")
                    results.fail(name, json.loads(reason))
                    after, current = name, None
                elif kind == "IMPORTERROR":
                    results.fail(module, json.loads(rest))
                    finished = True
                elif kind == "DONE":
                    finished = True
        os.close(rfd)
        if finished:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _killpg(proc)
            _killpg(proc)   # leftovers of the session (a process a test forgot)
            return
        _killpg(proc)
        if current is None and eof:
            results.fail(module, f"worker exited with {proc.returncode} outside a test "
                                 f"(see {log_dir}/{module}.runner.log)")
            return
        if timed_out == "budget":
            if current:
                results.fail(current, "not finished: the suite's time budget ran out")
            print(f"# {module}: time budget exhausted, remaining tests skipped", flush=True)
            results.budget_exhausted = True
            return
        if timed_out:
            results.fail(current or module, f"hung: no result after {args.timeout:.0f}s")
        else:
            results.fail(current, f"worker died (exit {proc.returncode}) during the test "
                                  f"(see {log_dir}/{module}.runner.log)")
        if current is None:
            return
        after = current


def _killpg(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def sanitizer_scan(log_dir):
    hits = []
    for path in sorted(glob.glob(os.path.join(log_dir, "*.log"))):
        if path.endswith(".runner.log"):
            continue
        with open(path, "rb") as f:
            for i, raw in enumerate(f, 1):
                line = raw.decode("utf-8", "replace")
                if any(m in line for m in SANITIZER_MARKERS):
                    hits.append(f"{os.path.basename(path)}:{i}: {line.strip()[:200]}")
    return hits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", help="run only tests whose name contains this")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("IT_TEST_TIMEOUT", "60")),
                    help="per-test hang bound in seconds")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("IT_BUDGET", "0")),
                    help="stop starting tests after this many seconds (0: no budget)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the workers' output")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--worker")
    ap.add_argument("--report-fd", type=int)
    ap.add_argument("--after")
    ap.add_argument("modules", nargs="*")
    args = ap.parse_args()

    if args.worker:
        return worker(args.worker, args.k, args.after, args.report_fd)

    modules = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(IT_DIR, "test_*.py")))
    if args.modules:
        wanted = [m[:-3] if m.endswith(".py") else m for m in (os.path.basename(x) for x in args.modules)]
        modules = [m for m in modules if m in wanted]

    bin_path = os.environ.get("BROKER_BIN", "build/stripe-token-broker")
    sanitized = os.environ.get("IT_SANITIZER") == "1" or "asan" in bin_path
    log_dir = os.environ.get("IT_LOG_DIR") or tempfile.mkdtemp(prefix="stb-it-")
    os.makedirs(log_dir, exist_ok=True)
    print(f"# broker: {bin_path}; logs: {log_dir}", flush=True)

    results = Results()
    results.budget_exhausted = False
    start = time.monotonic()
    deadline_at = start + args.budget if args.budget > 0 else float("inf")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        run_all(modules, args, results, deadline_at, log_dir)
    except Interrupted as e:
        if CURRENT["proc"] is not None:
            _killpg(CURRENT["proc"])
        results.fail("run", f"interrupted by {e}")
        print(f"# logs kept in {log_dir}", flush=True)
        print(f"it: {results.passed} passed, {results.failed} failed", flush=True)
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    if sanitized and results.passed + results.failed > 0:
        hits = sanitizer_scan(log_dir)
        if hits:
            results.fail("test_broker_stderr_has_no_sanitizer_reports",
                         f"{len(hits)} sanitizer line(s), first: {hits[0]}")
        else:
            results.ok("test_broker_stderr_has_no_sanitizer_reports", "0.00")

    total = results.passed + results.failed
    slow = sorted(results.durations, reverse=True)[:3]
    print(f"# {time.monotonic() - start:.1f}s; slowest: "
          + ", ".join(f"{n} {d:.1f}s" for d, n in slow), flush=True)
    if results.failed or args.keep_logs:
        print(f"# logs kept in {log_dir}", flush=True)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(f"it: {results.passed} passed, {results.failed} failed", flush=True)
    return 1 if results.failed or total == 0 else 0


def run_all(modules, args, results, deadline_at, log_dir):
    for m in modules:
        if results.budget_exhausted or time.monotonic() >= deadline_at:
            results.fail(m, "skipped: the suite's time budget ran out")
            continue
        run_module(m, args, results, deadline_at, log_dir, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
