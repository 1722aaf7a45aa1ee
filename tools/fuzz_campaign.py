#!/usr/bin/env python
"""Long fuzzing campaign: the hypothesis tests of tests/test_fuzz*.py, many more examples.

Every format is covered: CSR (test_fuzz.py), BSR and the sparse convolution
(test_fuzz_bsr_conv.py) and the bitmap (test_fuzz_bitmap.py); a new format's
fuzz tests join by living in a tests/test_fuzz*.py file with names starting
``test_fuzz``.

The examples are split into rounds; each round of each fuzz test runs in its
own pytest subprocess with its own seed (so a crash -- a segfault or abort --
is reported and the rest still runs, and finished rounds are counted even if
the campaign is stopped) with SPARSEGEMM_FUZZ_EXAMPLES examples. Hypothesis'
statistics give the number of inputs actually tried. Exit status is non-zero
if any round failed or crashed, or passed without any inputs counted.

    PYTHONPATH=python nice -n 19 python tools/fuzz_campaign.py --total 100000
    python tools/fuzz_campaign.py --total 3000 --rounds 1      # the reduced run CI does
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
FUZZ_FILES = sorted((REPO / "tests").glob("test_fuzz*.py"))
# "- 1234 passing examples, 0 failing examples, 56 invalid examples"
# Hypothesis' statistics line: "5 passing examples, 0 failing examples, 0 invalid
# examples" up to 6.15x, "5 passing, 0 failing, and 0 invalid test cases" later.
EXAMPLE_COUNTS = re.compile(
    r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?, (?:and )?(\d+) invalid"
)


def fuzz_test_names() -> list[str]:
    """Every fuzz test as a pytest node id (file::name)."""
    names = []
    for path in FUZZ_FILES:
        tree = ast.parse(path.read_text())
        names += [f"{path}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_fuzz")]
    return names


def run_one(name: str, examples: int, seed: int, timeout: float) -> tuple[int, int, str]:
    """(return code, inputs tried, output tail) of one fuzz test."""
    env = dict(os.environ, SPARSEGEMM_FUZZ_EXAMPLES=str(examples))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--hypothesis-show-statistics", "--hypothesis-seed", str(seed),
               name]
    try:
        result = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=timeout)
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
    parser.add_argument("--jobs", type=int, default=1, help="subprocesses run at once")
    parser.add_argument("--rounds", type=int, default=5, help="subprocesses per fuzz test")
    args = parser.parse_args()
    names = fuzz_test_names()
    per_round = -(-args.total // (len(names) * args.rounds))
    print(f"{len(names)} fuzz tests x {args.rounds} rounds x {per_round} examples, "
          f"{args.jobs} at a time", flush=True)
    start = time.perf_counter()
    base_seed = int(time.time())

    def timed_run(name: str, round_index: int) -> tuple[int, int, str, float]:
        code, tried, tail = run_one(name, per_round, base_seed + round_index, args.timeout)
        return code, tried, tail, time.perf_counter() - start

    tried_total, problems = 0, []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(timed_run, name, r): (name, r)
                   for r in range(args.rounds) for name in names}
        for future in as_completed(futures):
            name, round_index = futures[future]
            code, tried, tail, finished_at = future.result()
            tried_total += tried
            status = {0: "ok", -999: "TIMEOUT"}.get(code, "CRASH" if code < 0 else "FAILED")
            print(f"{name} round {round_index}: {status} (rc {code}), {tried} inputs, "
                  f"done after {finished_at:.0f} s; {tried_total} inputs so far", flush=True)
            if code != 0:
                problems.append(f"{name} round {round_index}")
                print(tail, flush=True)
            elif tried == 0:  # passed, but no statistics were read: nothing is known
                problems.append(f"{name} round {round_index} (no inputs counted)")
                print(tail, flush=True)
    print(f"total inputs tried: {tried_total}; failing or crashing tests: {problems or 'none'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
