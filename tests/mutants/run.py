#!/usr/bin/env python3
"""run.py — the mutation score: does each test stage catch the defect it is there for?

    python3 tests/mutants/run.py [-j N] [--list] [--no-baseline] [--keep] [NAME…]
    make mutants                           (every mutant, one at a time)

tests/mutants/mutants.txt lists single-line source mutations of broker/, each naming the
narrowest test selector that must catch it. For each one: apply it to a scratch copy of the
tree (broker/, proto/, tests/unit/, the Makefile, primed with build/'s objects so that only
the mutated file is compiled again), build it plain (`make BUILD=<scratch>/build all unit`),
run the selector against that build from this tree's tests, revert. Verdicts:

  caught    the selected tests failed (or hung past their bound);
  SURVIVED  they passed: a defect no test notices;
  INVALID   the snippet is not found exactly once, the mutant does not compile, or the
            selector fails without any mutation (checked once per selector first; a
            selector that selects nothing fails too, as every runner counts "nothing ran"
            as a failure);
  pending   an entry marked `expect: after-merge` that survived: its test lives on another
            branch; reported apart, not counted.

Prints one line per mutant, then the score and the run time; exit 1 when any mutant (not
pending) survived or was invalid. NAME… runs only those; -j N runs N at a time, each in its
own scratch copy (default 1: the tests measure time bounds). Needs what `make test` needs
(redis-server, wrk for the cache tests); never touches build/ or the sources of this tree.
"""

import argparse
import concurrent.futures
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LIST = os.path.join(ROOT, "tests", "mutants", "mutants.txt")
PY = sys.executable or "python3"
COPY = ("Makefile", "broker", "proto", os.path.join("tests", "unit"))
BUILD_TIMEOUT_S = 600
STAGE_TIMEOUT_S = 600
FIELDS = {"file", "find", "replace", "stage", "expect", "why"}


class Mutant:
    def __init__(self, name, line):
        self.name, self.line = name, line
        self.file = self.find = self.replace = self.stage = self.why = None
        self.expect = "caught"


def parse(path):
    """Sections "[name]" followed by "key: value" lines; '#' starts a comment line. A value
    is taken literally after "key: " (indentation kept), trailing whitespace dropped."""
    mutants, cur = [], None
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, 1):
            line = raw.rstrip("\n").rstrip()
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                cur = Mutant(line[1:-1], no)
                mutants.append(cur)
                continue
            key, sep, value = line.partition(":")
            if cur is None or not sep or key not in FIELDS:
                sys.exit(f"{path}:{no}: expected [name] or one of {sorted(FIELDS)}: {line!r}")
            setattr(cur, key, value[1:] if value.startswith(" ") else value)
    names = [m.name for m in mutants]
    for m in mutants:
        missing = [k for k in ("file", "find", "replace", "stage") if getattr(m, k) is None]
        if missing:
            sys.exit(f"{path}:{m.line}: [{m.name}] lacks {missing}")
        if m.expect not in ("caught", "after-merge"):
            sys.exit(f"{path}:{m.line}: [{m.name}] expect is 'caught' or 'after-merge'")
        if names.count(m.name) > 1:
            sys.exit(f"{path}:{m.line}: [{m.name}] appears twice")
        if m.find == m.replace:
            sys.exit(f"{path}:{m.line}: [{m.name}] replaces a snippet with itself")
    return mutants


def stage_command(stage, scratch):
    """The command line and environment of a selector, run from ROOT against scratch's build."""
    words = shlex.split(stage)
    kind, args = words[0], words[1:]
    env = dict(os.environ, BROKER_BIN=os.path.join(scratch, "build", "stripe-token-broker"))
    env.pop("IT_SANITIZER", None)
    if kind == "it":
        return [PY, "tests/it/run.py"] + args, env
    if kind == "fault":
        return [PY, "tests/fault/run.py"] + args, env
    if kind == "unit":
        env["CMOCKA_MESSAGE_OUTPUT"] = "stdout"
        return [os.path.join(scratch, "build", "unit", args[0])] + args[1:], env
    if kind == "cmd":
        return args, env
    raise ValueError(f"unknown stage kind {kind!r} (it, fault, unit, cmd)")


def run(cmd, cwd, env=None, timeout=STAGE_TIMEOUT_S):
    """(exit status or 'timeout', combined output)"""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout, start_new_session=True)
        return p.returncode, p.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode(errors="replace")


class Scratch:
    """A copy of the sources with its own build folder."""

    def __init__(self, base):
        self.dir = tempfile.mkdtemp(prefix="stb-mutant.", dir=base)
        for rel in COPY:
            src, dst = os.path.join(ROOT, rel), os.path.join(self.dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copy2(src, dst)
        build = os.path.join(ROOT, "build")
        for sub in ("obj", "unit"):   # mtimes kept: make compiles only what changed
            if os.path.isdir(os.path.join(build, sub)):
                shutil.copytree(os.path.join(build, sub), os.path.join(self.dir, "build", sub), symlinks=True)

    def make(self, targets=("all", "unit"), jobs=1):
        return run(["make", f"-j{jobs}", "--no-print-directory", "BUILD=build"] + list(targets), self.dir,
                   timeout=BUILD_TIMEOUT_S)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def tail(text, n=25):
    return "\n".join("    " + l for l in text.rstrip().splitlines()[-n:])


def try_mutant(m, scratch, verbose):
    """Returns (verdict, seconds, detail)."""
    t0 = time.monotonic()
    path = os.path.join(scratch.dir, m.file)
    try:
        with open(path, encoding="utf-8") as f:
            orig = f.read()
    except OSError as e:
        return "INVALID", 0.0, f"{m.file}: {e}"
    if orig.count(m.find) != 1:
        return "INVALID", 0.0, f"the snippet occurs {orig.count(m.find)} times in {m.file} (must be once)"
    with open(path, "w", encoding="utf-8") as f:
        f.write(orig.replace(m.find, m.replace))
    try:
        words = shlex.split(m.stage)   # build only what the selector runs
        rc, out = scratch.make(["build/unit/" + words[1]] if words[0] == "unit" else ["all"])
        if rc != 0:
            return "INVALID", time.monotonic() - t0, "the mutant does not compile:\n" + tail(out)
        cmd, env = stage_command(m.stage, scratch.dir)
        rc, out = run(cmd, ROOT, env)
        detail = tail(out, 60 if verbose else 12)
        if rc == 0:
            return "SURVIVED", time.monotonic() - t0, detail
        return "caught", time.monotonic() - t0, detail if verbose else ""
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(orig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="run only these mutants")
    ap.add_argument("-j", type=int, default=1, help="mutants at a time (default 1)")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running each selector once without a mutation")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    ap.add_argument("-v", action="store_true", help="show the selector's output for every mutant")
    a = ap.parse_args()

    mutants = parse(LIST)
    if a.list:
        for m in mutants:
            print(f"{m.name:40} {m.expect:11} {m.file:30} {m.stage}")
        return 0
    if a.names:
        unknown = [n for n in a.names if n not in {m.name for m in mutants}]
        if unknown:
            sys.exit(f"unknown mutant(s): {', '.join(unknown)} (see --list)")
        mutants = [m for m in mutants if m.name in a.names]

    t_start = time.monotonic()
    base = tempfile.mkdtemp(prefix="stb-mutants.")
    jobs = max(1, min(a.j, len(mutants)))
    print(f"mutants: {len(mutants)} to try, {jobs} at a time; scratch copies in {base}", flush=True)
    scratches = [Scratch(base) for _ in range(jobs)]
    results = {}
    lock = threading.Lock()
    try:
        for s in scratches:
            rc, out = s.make(jobs=2)
            if rc != 0:
                print("mutants: the unmutated tree does not build:\n" + tail(out))
                return 1
        bad_stage = {}
        if not a.no_baseline:
            for stage in sorted({m.stage for m in mutants}):
                t0 = time.monotonic()
                cmd, env = stage_command(stage, scratches[0].dir)
                rc, out = run(cmd, ROOT, env)
                ok = rc == 0
                print(f"baseline {'ok  ' if ok else 'FAIL'} {stage} ({time.monotonic() - t0:.1f}s)", flush=True)
                if not ok:
                    bad_stage[stage] = "the selector fails without any mutation:\n" + tail(out)

        free = list(scratches)

        def one(m):
            if m.stage in bad_stage:
                verdict, secs, detail = "INVALID", 0.0, bad_stage[m.stage]
            else:
                with lock:
                    s = free.pop()
                try:
                    verdict, secs, detail = try_mutant(m, s, a.v)
                finally:
                    with lock:
                        free.append(s)
            if verdict == "SURVIVED" and m.expect == "after-merge":
                verdict = "pending"
            with lock:
                results[m.name] = verdict
                print(f"{verdict:8} {m.name} [{m.stage}] {secs:.1f}s", flush=True)
                if detail and verdict != "pending":
                    print(detail, flush=True)

        with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
            list(ex.map(one, mutants))
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)

    counted = [m for m in mutants if results.get(m.name) != "pending"]
    caught = sum(results.get(m.name) == "caught" for m in counted)
    survived = [m.name for m in counted if results.get(m.name) == "SURVIVED"]
    invalid = [m.name for m in counted if results.get(m.name) == "INVALID"]
    pending = [m.name for m in mutants if results.get(m.name) == "pending"]
    early = [m.name for m in mutants if m.expect == "after-merge" and results.get(m.name) == "caught"]
    minutes = (time.monotonic() - t_start) / 60
    print()
    if survived:
        print("survived: " + ", ".join(survived))
    if invalid:
        print("invalid: " + ", ".join(invalid))
    if pending:
        print("pending (expect: after-merge, their tests are not on this branch): " + ", ".join(pending))
    if early:
        print("caught although marked after-merge (the mark can go): " + ", ".join(early))
    print(f"mutants: {caught} of {len(counted)} caught, {len(survived)} survived, {len(invalid)} invalid, "
          f"{len(pending)} pending; {minutes:.1f} min")
    return 1 if survived or invalid else 0


if __name__ == "__main__":
    sys.exit(main())
