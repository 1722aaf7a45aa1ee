#!/usr/bin/env python
"""Long fuzzing campaign: the hypothesis tests of tests/test_fuzz.py, many more examples.

Each fuzz test runs in its own pytest subprocess (so a crash in one -- a
segfault or abort -- is reported and the others still run) with
SPARSEGEMM_FUZZ_EXAMPLES examples. Hypothesis' statistics give the number of
inputs actually tried. Exit status is non-zero if any test failed or crashed.

    PYTHONPATH=python nice -n 19 python tools/fuzz_campaign.py --total 100000
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUZZ_FILE = REPO / "tests" / "test_fuzz.py"
# "- 1234 passing examples, 0 failing examples, 56 invalid examples"
EXAMPLE_COUNTS = re.compile(r"(\d+) passing examples?, (\d+) failing examples?, (\d+) invalid")


def fuzz_test_names() -> list[str]:
    tree = ast.parse(FUZZ_FILE.read_text())
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_fuzz")]


def run_one(name: str, examples: int, timeout: float) -> tuple[int, int, str]:
    """(return code, inputs tried, output tail) of one fuzz test."""
    env = dict(os.environ, SPARSEGEMM_FUZZ_EXAMPLES=str(examples))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--hypothesis-show-statistics", "--hypothesis-seed", str(int(time.time())),
               f"{FUZZ_FILE}::{name}"]
    try:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace") if isinstance(
            expired.stdout, bytes) else (expired.stdout or "")
        return -999, 0, output[-2000:]
    output = result.stdout + result.stderr
    tried = sum(sum(int(n) for n in match) for match in EXAMPLE_COUNTS.findall(output))
    return result.returncode, tried, output[-4000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=100_000,
                        help="examples to run, split evenly across the fuzz tests")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="per test, seconds")
    parser.add_argument("--jobs", type=int, default=1, help="fuzz tests run at once")
    args = parser.parse_args()
    names = fuzz_test_names()
    per_test = -(-args.total // len(names))
    print(f"{len(names)} fuzz tests x {per_test} examples, {args.jobs} at a time", flush=True)
    start = time.perf_counter()

    def timed_run(name: str) -> tuple[int, int, str, float]:
        code, tried, tail = run_one(name, per_test, args.timeout)
        return code, tried, tail, time.perf_counter() - start

    tried_total, problems = 0, []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(timed_run, name): name for name in names}
        for future in as_completed(futures):
            name = futures[future]
            code, tried, tail, finished_at = future.result()
            tried_total += tried
            status = {0: "ok", -999: "TIMEOUT"}.get(code, "CRASH" if code < 0 else "FAILED")
            print(f"{name}: {status} (rc {code}), {tried} inputs, done after {finished_at:.0f} s",
                  flush=True)
            if code != 0:
                problems.append(name)
                print(tail, flush=True)
    print(f"total inputs tried: {tried_total}; failing or crashing tests: {problems or 'none'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
