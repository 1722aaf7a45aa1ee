"""benchmarks/verify_point.py: the independent check of a suite figure."""

import itertools
import json

import numpy as np
import pytest


def _results(tmp_path, **row):
    base = {
        "out_features": 16,
        "in_features": 32,
        "batch": 1,
        "sparsity": 0.9,
        "pattern": "unstructured",
        "dtype": "float32",
        "threads": 1,
        "status": "ok",
        "contender": "sgemm_auto",
        "format": "csr",
        "kept_dense": False,
        "cache": "cold",
        "speedup": 1.0,
        "baseline": "numpy_dense",
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [{**base, **row}]}))
    return str(path)


ARGS = ["16x32", "1", "0.9", "sgemm_auto", "--threads", "1", "--repeats", "20", "--block-ms", "0.2"]


def test_a_point_the_suite_kept_dense_has_nothing_to_verify(benchmark_script, tmp_path, capsys):
    verify = benchmark_script("verify_point")
    path = _results(tmp_path, kept_dense=True, format="dense (numpy)")
    assert verify.main([*ARGS, "--against", path]) == 0
    assert "kept this weight dense" in capsys.readouterr().out


def test_it_runs_the_suites_format_and_cache_mode_and_flags_disagreement(
    benchmark_script, tmp_path, capsys
):
    verify = benchmark_script("verify_point")
    path = _results(tmp_path, format="bsr4x1", speedup=1000.0)
    assert verify.main([*ARGS, "--against", path]) == 1
    out = capsys.readouterr().out
    assert "cold" in out and "sgemm_auto (bsr4x1)" in out and "DISAGREES" in out


def test_cold_rotation_converts_separate_copies(benchmark_script, monkeypatch):
    verify = benchmark_script("verify_point")
    monkeypatch.setattr(verify, "last_level_cache_bytes", lambda: (1000, "test"))
    seen = []
    weight = np.zeros(4)
    call, copies = verify._cold_rotation(
        lambda copy: lambda: seen.append(id(copy)), weight, lambda w: w, footprint_bytes=100
    )
    assert copies == 20
    for _ in range(40):
        call()
    assert len(set(seen)) == 20


def _verify_in_two_processes(benchmark_script, tmp_path, capsys, process_formats):
    """verify_point --processes 2 against a suite row (csr, 1000x) whose two processes
    ran ``process_formats``: its exit status and output."""
    verify = benchmark_script("verify_point")
    path = _results(tmp_path, format="csr", process_formats=process_formats, speedup=1000.0)
    status = verify.main([*ARGS, "--processes", "2", "--against", path])
    return status, capsys.readouterr().out


def test_processes_measure_in_fresh_processes_each_with_its_suite_process_format(
    benchmark_script, tmp_path, capsys
):
    status, out = _verify_in_two_processes(benchmark_script, tmp_path, capsys, ["csr", "bsr4x1"])
    assert status == 1
    assert "process 1: csr" in out and "process 2: bsr4x1" in out
    # as in the suite's merge, only the processes that ran the row's format count
    assert "not the suite's format (csr): left out" in out
    assert "median of 1 processes" in out and "DISAGREES" in out


def test_a_process_whose_planner_kept_the_weight_dense_is_left_out(
    benchmark_script, tmp_path, capsys
):
    status, out = _verify_in_two_processes(
        benchmark_script, tmp_path, capsys, ["dense (torch)", "csr"]
    )
    assert status == 1
    assert "process 1: dense (torch), no sparse figure" in out and "process 2: csr" in out
    assert "median of 1 processes" in out


def test_a_slow_first_call_does_not_shrink_the_blocks(benchmark_script, monkeypatch, clock):
    """The first call pays the wake-up and cache refill (here 10x a steady call); the
    block is sized from the calls after it, so it lasts block_s, as the suite's do."""
    verify = benchmark_script("verify_point")
    monkeypatch.setattr(verify, "time", clock)
    call = clock.call_taking(itertools.chain([1e-3], itertools.repeat(1e-4)))
    medians, sizes = verify._block_median({"short": call}, repeats=3, block_s=0.02)
    assert sizes == {"short": 200}  # 20 ms / 0.1 ms, not 20 ms / 1 ms
    assert medians["short"] == pytest.approx(1e-4)


def test_block_sizing_probes_at_least_once(benchmark_script):
    # a block budget already spent before the first probe (as when the process is
    # descheduled) still sizes the block from one timed call instead of dividing by zero
    verify = benchmark_script("verify_point")
    calls = []
    medians, sizes = verify._block_median({"f": lambda: calls.append(1)}, repeats=1, block_s=0.0)
    assert sizes == {"f": 1} and medians["f"] >= 0 and len(calls) == 4
