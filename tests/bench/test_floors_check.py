"""benchmarks/floors_check.py and verify_point --speedups-from: the interleaved floor check."""

import json

import pytest

from .test_verify_point import _results


def _save(folder, process, name, speedup, fmt):
    path = folder / f"process-{process}"
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps({"speedup": speedup, "format": fmt}))


def _suite_row(tmp_path, **row):
    """A suite results.json like test_verify_point's, for a warm 4x4-block point."""
    base = dict(pattern="block:4x4", format="bsr4x1", cache="warm", speedup=4.0)
    return _results(tmp_path, **{**base, **row})


ARGS = ["16x32", "1", "0.9", "sgemm_auto", "--pattern", "block:4x4", "--threads", "1"]


@pytest.mark.parametrize("suite_speedup, status", [(4.0, 0), (2.0, 1)])
def test_speedups_from_compares_the_median_of_the_saved_processes(
    benchmark_script, tmp_path, capsys, suite_speedup, status
):
    verify = benchmark_script("verify_point")
    saved = tmp_path / "verify"
    name = verify.point_file_name("16x32", 1, "block:4x4")
    assert name == "16x32-block4x4-b1.json"
    for process, speedup in enumerate([3.0, 4.0, 5.0, 100.0], start=1):
        _save(saved, process, name, speedup, "bsr4x1" if speedup < 100 else "bsr4x4")
    _save(saved, 5, name, None, "dense (numpy)")
    _save(saved, 6, "another-point.json", 1000.0, "bsr4x1")
    path = _suite_row(tmp_path, speedup=suite_speedup)
    assert verify.main([*ARGS, "--against", path, "--speedups-from", str(saved)]) == status
    out = capsys.readouterr().out
    # 100x ran another format than the suite's and is left out; the dense process has
    # no figure; the other point's file is not read
    assert "median of 3 processes: 4.00x" in out
    assert "not the suite's format (bsr4x1): left out" in out
    assert "no sparse figure" in out


def test_speedups_from_with_nothing_saved_is_an_error_not_a_pass(
    benchmark_script, tmp_path, capsys
):
    verify = benchmark_script("verify_point")
    (tmp_path / "verify" / "process-1").mkdir(parents=True)
    path = _suite_row(tmp_path)
    assert verify.main([*ARGS, "--against", path, "--speedups-from", str(tmp_path / "verify")]) == 2
    assert "no process measured" in capsys.readouterr().out


def test_the_check_alternates_suite_and_harness_processes_then_compares(
    benchmark_script, tmp_path, capfd, monkeypatch
):
    check = benchmark_script("floors_check")
    monkeypatch.setattr(check, "SHAPES", ("24x40",))
    monkeypatch.setattr(check, "PATTERNS", ("unstructured",))
    monkeypatch.setattr(check, "BATCHES", (1,))
    status = check.main(["--processes", "2", "--modes", "warm", "--out", str(tmp_path)])
    out = capfd.readouterr().out
    commands = [line for line in out.splitlines() if line.startswith("$ ")]
    kinds = [
        "merge" if "--merge" in line else "compare" if "--speedups-from" in line
        else "suite" if "sparsegemm.bench" in line else "verify"
        for line in commands
    ]
    assert kinds == ["suite", "verify", "suite", "verify", "merge", "compare"]
    folder = tmp_path / "floors-warm"
    merged = json.loads((folder / "results.json").read_text())
    assert merged["settings"]["processes"] == 2
    for process in (1, 2):
        saved = json.loads(
            (folder / "verify" / f"process-{process}" / "24x40-unstructured-b1.json").read_text()
        )
        suite = json.loads((folder / f"process-{process}" / "results.json").read_text())
        (auto,) = [row for row in suite["results"] if row["contender"] == "sgemm_auto"]
        # each harness process timed the format its own suite process chose
        assert saved["format"] == auto["format"]
    assert "median of" in out or "no sparse figure" in out
    assert status in (0, 1)  # agreement on a tiny point is up to the machine
