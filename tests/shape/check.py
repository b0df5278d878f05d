#!/usr/bin/env python3
"""check.py — the source tree keeps the shape the README's "How it works" describes.

    python3 tests/shape/check.py        prints "ok"/"FAIL" per check, then
                                        "shape: N passed, M failed"; exit 1 on any failure

Checks (each reads the tree, none builds or runs anything):
  - layers: nothing under broker/{core,store,stripe,tokens} names the HTTP request
    (breq_, h2o_req_t) or includes a header of the HTTP side (server.h, routes/, http/);
    the HTTP side reaches those modules, never the other way round.
  - core is pure: broker/core includes only its own headers and system headers.
  - Tested by: every file named on a "Tested by" line of broker/, proto/, tests/ or deploy/
    exists (a "Tested by" line that names a missing file is a bug).
  - citations: broker/ cites no document outside the repository (CONTRACT §…,
    DESIGN.md): proto/ and the README say it themselves.
Run by tests/shape/run.sh, a stage of tests/run.sh (`make test`).
"""
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BELOW_HTTP = ("core", "store", "stripe", "tokens")
HTTP_NAMES = re.compile(r"\bbreq_\w*|\bh2o_req_t\b")
HTTP_INCLUDES = re.compile(r'#\s*include\s+"(server\.h|routes/[^"]*|http/[^"]*)"')
INCLUDE = re.compile(r'#\s*include\s+"([^"]+)"')
TESTED_BY = re.compile(r"Tested\s+(?:on its own\s+)?by\b", re.I)
PATHLIKE = re.compile(r"(?<![\w./-])((?:tests|deploy|proto|broker)/[\w./-]*\w|test_\w+\.(?:py|c|sh|mjs))")
CITATION = re.compile(r"CONTRACT(?:\.md)?\s*§|\bDESIGN\.md\b")


def tracked(*prefixes):
    """Files of the working tree under the prefixes (tracked or new, not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *prefixes],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if os.path.isfile(os.path.join(ROOT, p))]


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8", errors="replace") as f:
        return f.read()


def check_layers():
    problems = []
    for rel in tracked(*(f"broker/{d}" for d in BELOW_HTTP)):
        for n, line in enumerate(read(rel).splitlines(), 1):
            m = HTTP_NAMES.search(line) or HTTP_INCLUDES.search(line)
            if m:
                problems.append(f"{rel}:{n}: {m.group(0)}")
    return problems


def check_core_is_pure():
    problems = []
    for rel in tracked("broker/core"):
        for n, line in enumerate(read(rel).splitlines(), 1):
            m = INCLUDE.search(line)
            if m is None:
                continue
            inc = m.group(1)
            if not (inc.startswith("core/") or os.path.exists(os.path.join(ROOT, "broker/core", inc))):
                problems.append(f"{rel}:{n}: includes {inc}")
    return problems


def tested_by_blocks(text):
    """The text of each "Tested by" mention: up to the end of its comment or paragraph."""
    for m in TESTED_BY.finditer(text):
        rest = text[m.end():m.end() + 1500]
        cut = len(rest)
        for end in ("*/", '"""', "\n\n", "\n#\n", "\n# \n"):
            i = rest.find(end)
            if i != -1:
                cut = min(cut, i)
        yield rest[:cut]


def check_tested_by():
    problems = []
    for rel in tracked("broker", "proto", "tests", "deploy", "README.md"):
        if not rel.endswith((".c", ".h", ".py", ".sh", ".md", ".mjs", ".js", ".yaml", ".yml", ".txt")):
            continue
        if rel == "tests/shape/check.py":
            continue
        text = read(rel)
        for block in tested_by_blocks(text):
            last_dir = None
            for name in PATHLIKE.findall(block):
                name = name.rstrip(".")
                if "/" in name:
                    candidates = [name]
                    last_dir = os.path.dirname(name)
                else:  # a bare file name: next to the last path named, or in a test folder
                    candidates = [os.path.join(d, name) for d in
                                  filter(None, (last_dir, os.path.dirname(rel), "tests/it", "tests/unit",
                                                "tests/fault", "tests/fuzz"))]
                if not any(os.path.exists(os.path.join(ROOT, c)) for c in candidates):
                    problems.append(f"{rel}: names {name}, which does not exist")
    return problems


def check_citations():
    problems = []
    for rel in tracked("broker"):
        for n, line in enumerate(read(rel).splitlines(), 1):
            m = CITATION.search(line)
            if m:
                problems.append(f"{rel}:{n}: {m.group(0)}")
    return problems


CHECKS = [
    ("no HTTP type or header below routes/ (core, store, stripe, tokens)", check_layers),
    ("core/ includes only core/ and system headers", check_core_is_pure),
    ('every "Tested by" line names files that exist', check_tested_by),
    ("broker/ cites no document outside the repository", check_citations),
]


def main():
    only = sys.argv[1:]
    passed = failed = 0
    for what, fn in CHECKS:
        if only and fn.__name__ not in only:
            continue
        problems = fn()
        if problems:
            failed += 1
            print(f"FAIL {what}:")
            for p in problems[:40]:
                print(f"    {p}")
            if len(problems) > 40:
                print(f"    … and {len(problems) - 40} more")
        else:
            passed += 1
            print(f"ok   {what}")
    print(f"shape: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
