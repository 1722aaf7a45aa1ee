"""The command end to end at the --quick-test size, its files, and compare."""

import copy
import csv
import json
import os
import re
import subprocess
import sys

import pytest

import sparsegemm
from sparsegemm.bench.cli import main
from sparsegemm.bench.compare import compare_documents, compare_files
from sparsegemm.bench.environment import TIMING_ENV
from sparsegemm.bench.results import COLUMNS, load_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = main(["bench", "--quick-test", "--out", str(out), "--no-progress"])
    assert status == 0
    return out


def test_writes_every_output(quick_run):
    for name in ("results.csv", "results.json", "report.md"):
        assert (quick_run / name).stat().st_size > 0


def test_plot_is_a_png(quick_run):
    pytest.importorskip("matplotlib")
    assert (quick_run / "crossover.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_has_the_documented_columns_and_sane_rows(quick_run):
    with open(quick_run / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS)
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["contender"] for r in ok} >= {"numpy_dense", "sgemm_csr", "scipy_csr"}
    assert {(r["batch"], r["sparsity"]) for r in ok} == {
        (b, s) for b in ("1", "8") for s in ("0.5", "0.9")
    }
    for row in ok:
        assert float(row["time_median_s"]) > 0
        assert float(row["time_q1_s"]) <= float(row["time_median_s"]) <= float(row["time_q3_s"])
        if row["kept_dense"] == "True":  # a dense library ran: no sparse speedup
            assert row["speedup"] == "" and row["format"].startswith("dense")
            continue
        assert float(row["speedup"]) == pytest.approx(
            float(row["baseline_time_s"]) / float(row["time_median_s"])
        )


def test_json_has_machine_metadata_and_break_even(quick_run):
    document = load_json(str(quick_run / "results.json"))
    metadata = document["metadata"]
    assert metadata["cpu_model"]
    assert metadata["sparsegemm"]["isa"] in ("scalar", "avx2", "avx512")
    assert metadata["threads"] >= 1 and metadata["numpy"] and metadata["scipy"]
    assert "threadpools" in metadata and "timing_env" in metadata
    assert "--quick-test" in metadata["command"]
    assert document["break_even"]
    assert all(
        set(r)
        >= set(COLUMNS)
        - {
            "time_median_s",
            "time_q1_s",
            "time_q3_s",
            "time_min_s",
            "time_max_s",
            "samples",
            "calls_per_sample",
            "baseline",
            "baseline_time_s",
            "best_dense",
            "useful_gflops",
            "effective_gflops",
            "baseline_gflops",
            "max_rel_error",
            "remeasured",
            "steady",
            "cold_copies",
            "own_dense_time_s",
            "flag",
            "processes",
            "format_processes",
            "process_speedups",
            "process_formats",
            "process_spread",
            "x_alignment",
            "weight_alignment",
        }
        for r in document["results"]
    )


def test_report_states_break_even_per_shape_and_batch(quick_run):
    report = (quick_run / "report.md").read_text()
    # a 64x128 weight is so small that even the most copies allowed may fit in the cache
    assert re.search(r"\| 64x128 \| unstructured \| 1 \| [a-z /]*cold \|", report)
    assert re.search(r"\| 64x128 \| unstructured \| 8 \| [a-z /]*cold \|", report)
    assert "| at 90% vs base | vs best | vs own 0% |" in report
    assert "skipped: sgemm_bsr at 4 points" in report  # rows that did not run are listed


def test_readme_documents_every_column():
    with open(os.path.join(REPO, "benchmarks", "README.md")) as handle:
        readme = handle.read()
    missing = [column for column in COLUMNS if f"`{column}`" not in readme]
    assert not missing


def test_compare_shows_changed_speedups(quick_run, tmp_path, capsys):
    old = load_json(str(quick_run / "results.json"))
    new = copy.deepcopy(old)
    changed = next(
        r for r in new["results"] if r["contender"] == "sgemm_csr" and r["status"] == "ok"
    )
    changed["speedup"] *= 2
    new["metadata"]["numpy"] = "9.9"
    result = compare_documents(old, new)
    significant = [c for c in result["changes"] if c["significant"]]
    assert len(significant) == 1 and significant[0]["ratio"] == pytest.approx(2.0)
    assert ("numpy", old["metadata"]["numpy"], "9.9") in result["metadata"]
    new_path = tmp_path / "new.json"
    new_path.write_text(json.dumps(new))
    assert main(["bench", "--compare", str(quick_run / "results.json"), str(new_path)]) == 0
    text = capsys.readouterr().out
    assert "1 speedups changed" in text and "9.9" in text
    assert "0 speedups changed" in compare_files(str(new_path), str(new_path))


def test_compare_rejects_a_file_that_is_not_a_result(tmp_path):
    bogus = tmp_path / "x.json"
    bogus.write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--compare", str(bogus), str(bogus)])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "option",
    [
        ["--shape", "12"],
        ["--pattern", "diag"],
        ["--batch", "0"],
        ["--shape", "30x30", "--pattern", "block:4x4"],
        ["--formats", "nope"],
        ["--sparsity", "1.2"],
    ],
)
def test_bad_options_exit_with_a_message(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--quick-test", "--out", str(tmp_path), "--no-progress", *option])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_list_formats_names_the_registry(capsys):
    assert main(["bench", "--list-formats"]) == 0
    assert "sgemm_csr" in capsys.readouterr().out


def test_no_subcommand_prints_help(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().out


def test_importing_the_bench_does_not_import_torch():
    code = (
        "import sys, sparsegemm.timing, sparsegemm.bench.cli, sparsegemm.bench.suite, "
        "sparsegemm.bench.e2e; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


def test_layer_suite_runs_each_layer_at_its_own_n(tmp_path):
    layers = tmp_path / "layers.csv"
    layers.write_text(
        "# a comment\nmodel,layer,kind,out_features,in_features,n\n"
        "toy,fc,linear,16,32,3\ntoy,conv,conv1x1,8,16,49\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "bench",
                "--layers",
                str(layers),
                "--sparsity",
                "0.9",
                "--repeats",
                "1",
                "--formats",
                "sgemm_csr",
                "--out",
                str(out),
                "--no-progress",
                "--no-plot",
            ]
        )
        == 0
    )
    with open(out / "results.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["contender"] == "sgemm_csr"]
    assert {(r["out_features"], r["in_features"], r["batch"], r["label"]) for r in rows} == {
        ("16", "32", "3", "toy fc"),
        ("8", "16", "49", "toy conv"),
    }


def _run_console(args, tmp_path):
    """Run the console-script entry (argv=None) in a fresh process, as `sparsegemm` would."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (*TIMING_ENV, "SPARSEGEMM_BENCH_REEXEC")
    }
    package_root = os.path.dirname(os.path.dirname(sparsegemm.__file__))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    code = (
        "import sys; from sparsegemm.bench.cli import main; "
        f"sys.argv = ['sparsegemm', *{args!r}]; sys.exit(main())"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )


def test_console_script_reexecutes_with_the_timing_environment(tmp_path):
    done = _run_console(
        ["bench", "--quick-test", "--no-progress", "--no-plot", "--formats", "sgemm_csr"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    metadata = load_json(str(tmp_path / "bench_results" / "results.json"))["metadata"]
    assert metadata["timing_env_applied"]
    assert metadata["timing_env"]["KMP_BLOCKTIME"] == "1"
    assert "trim_threshold" in metadata["timing_env"]["GLIBC_TUNABLES"]
    assert "not applied" not in done.stdout


def test_python_dash_m_accepts_options_without_the_subcommand(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sparsegemm.bench", "--list-formats"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "numpy_dense" in done.stdout


def test_console_help_is_the_top_level_help_in_any_environment(tmp_path):
    without = _run_console(["--help"], tmp_path)
    assert without.returncode == 0, without.stderr
    assert without.stdout.startswith("usage: sparsegemm [-h] {bench}")
    # With the timing environment already set no re-execution happens; the help is the same.
    with_timing_env = subprocess.run(
        [sys.executable, "-c", ("import sys; from sparsegemm.bench.cli import main; "
                                "sys.argv = ['sparsegemm', '--help']; sys.exit(main())")],
        env={**os.environ, **TIMING_ENV}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert with_timing_env.stdout == without.stdout


def test_bare_console_command_prints_help_and_runs_nothing(tmp_path):
    done = _run_console([], tmp_path)
    assert done.returncode == 2
    assert done.stdout.startswith("usage: sparsegemm [-h] {bench}")
    assert not (tmp_path / "bench_results").exists()


def test_bench_flags_still_work_under_the_subcommand(capsys):
    assert main(["bench", "--e2e", "--list-formats"]) == 0
    assert "sgemm_csr" in capsys.readouterr().out


def test_a_wrong_sparsegemm_result_is_listed_and_fails_the_run(monkeypatch, tmp_path, capsys):
    from sparsegemm.bench import contenders as registry

    monkeypatch.setitem(
        registry.REGISTRY,
        "sgemm_broken",
        registry.Contender(
            "sgemm_broken",
            "returns twice the answer",
            "sparse",
            lambda p: lambda: 2.0 * (p.x @ p.weight.T),
            is_sparsegemm=True,
        ),
    )
    out = tmp_path / "out"
    args = ["bench", "--quick-test", "--formats", "sgemm_broken", "--batch", "1"]
    status = main([*args, "--sparsity", "0.9", "--out", str(out), "--no-progress", "--no-plot"])
    assert status == 1
    printed = capsys.readouterr()
    assert "WRONG: sgemm_broken at 64x128 batch 1" in printed.out
    assert "sparsegemm results were wrong" in printed.err
    assert "WRONG: sgemm_broken" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "flag, expected", [("--cold", {"cold", "partly cold"}), ("--warm", {"warm"})]
)
def test_cold_and_warm_apply_to_every_batch(flag, expected, tmp_path):
    out = tmp_path / "out"
    options = ["--formats", "sgemm_csr", "--sparsity", "0.9", "--batch", "1,64"]
    assert main(["bench", "--quick-test", flag, *options, "--out", str(out), "--no-progress",
                 "--no-plot"]) in (0,)
    rows = load_json(str(out / "results.json"))["results"]
    assert {r["cache"] for r in rows} <= expected and {r["batch"] for r in rows} == {1, 64}
    assert load_json(str(out / "results.json"))["settings"]["cache"] == flag[2:]


def test_by_default_small_batches_are_cold_and_large_ones_warm(quick_run):
    rows = load_json(str(quick_run / "results.json"))["results"]
    assert {r["batch"] for r in rows} == {1, 8}
    assert {r["cache"] for r in rows} <= {"cold", "partly cold"}
    ok = [r for r in rows if r["status"] == "ok" and r["contender"] == "sgemm_csr"]
    assert all(r["cold_copies"] > 100 for r in ok)  # a 32 KB weight needs many copies
    metadata = load_json(str(quick_run / "results.json"))["metadata"]
    assert metadata["last_level_cache"]["bytes"] > 0 and metadata["affinity"]["cpus"]
    assert all(r["x_alignment"] in range(64) for r in ok)


def test_processes_runs_fresh_processes_and_merges_them(tmp_path):
    out = tmp_path / "out"
    options = ["--formats", "sgemm_csr", "--sparsity", "0.9", "--batch", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "sparsegemm.bench", "--quick-test", *options, "--processes", "2",
         "--out", str(out), "--no-progress", "--no-plot"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    document = load_json(str(out / "results.json"))
    rows = [r for r in document["results"] if r["contender"] == "sgemm_csr"]
    assert rows and all(r["processes"] == 2 and len(r["process_speedups"]) == 2 for r in rows)
    for row in rows:
        assert row["speedup"] == pytest.approx(sum(row["process_speedups"]) / 2)
        assert row["process_spread"] == pytest.approx(
            max(row["process_speedups"]) / min(row["process_speedups"])
        )
        assert row["process_formats"] == ["csr", "csr"]
    assert len(document["metadata"]["processes"]) == 2
    assert (out / "process-1" / "results.json").exists()

    # --merge merges the saved process folders again, without measuring
    first = load_json(str(out / "process-1" / "results.json"))
    changed = next(r for r in first["results"] if r["contender"] == "sgemm_csr")
    changed["speedup"] = 1000.0
    with open(out / "process-1" / "results.json", "w") as handle:
        json.dump(first, handle)
    done = subprocess.run(
        [sys.executable, "-m", "sparsegemm.bench", "--quick-test", *options, "--processes", "2",
         "--merge", "--out", str(out), "--no-progress", "--no-plot"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    merged = load_json(str(out / "results.json"))
    row = next(r for r in merged["results"] if r["contender"] == "sgemm_csr"
               and r["batch"] == changed["batch"] and r["sparsity"] == changed["sparsity"]
               and r["out_features"] == changed["out_features"])
    assert 1000.0 in row["process_speedups"]
    missing = subprocess.run(
        [sys.executable, "-m", "sparsegemm.bench", *options, "--processes", "3", "--merge",
         "--out", str(out), "--no-progress", "--no-plot"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300, check=False,
    )
    assert missing.returncode == 2 and "error: --merge: no" in missing.stderr
    assert "process-3" in missing.stderr and "Traceback" not in missing.stderr


def test_last_level_cache_size_comes_from_sysfs_with_a_fallback(tmp_path):
    from sparsegemm.timing import FALLBACK_LLC_BYTES, last_level_cache_bytes

    for index, (level, size) in enumerate(((1, "32K"), (2, "1024K"), (3, "96M"))):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "size").write_text(f"{size}\n")
    assert last_level_cache_bytes(str(tmp_path)) == (96 * 2**20, "sysfs L3")
    size, source = last_level_cache_bytes(str(tmp_path / "missing"))
    assert size > 0 and (source.startswith("sysconf") or size == FALLBACK_LLC_BYTES)


def test_a_kept_dense_point_never_reaches_a_sparsegemm_figure(monkeypatch, tmp_path):
    # The planner keeps every weight dense: numpy runs, and at batch 8 it is faster
    # than torch, the baseline. None of it may show up as a sparsegemm speedup.
    def keep_dense(weight, batch, **kwargs):
        return sparsegemm.Plan("dense", None, {"dense_numpy": 1.0}, 1.0, 1.0)

    monkeypatch.setattr(sparsegemm, "plan", keep_dense)
    out = tmp_path / "out"
    options = ["--formats", "sgemm_auto", "--pattern", "unstructured", "--warm"]
    assert main(["bench", "--quick-test", *options, "--out", str(out), "--no-progress"]) == 0
    document = load_json(str(out / "results.json"))
    auto = [r for r in document["results"] if r["contender"] == "sgemm_auto"]
    assert auto and all(r["kept_dense"] and r["format"] == "dense (numpy)" for r in auto)
    assert all(r["speedup"] != r["speedup"] for r in auto)  # NaN: no speedup
    for entry in document["break_even"]:  # "n/a" when noise left every point out as suspect
        assert entry["break_even_sparsity"] in ("never", "n/a") and entry["speedup_at_90"] is None
    report = (out / "report.md").read_text()
    assert "no sparse contender has a figure to plot" in report
    for line in report.splitlines():
        if line.startswith("| 64x128"):
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            assert cells[7:10] == ["-", "-", "-"] and cells[6] in ("never", "n/a")
            assert cells[5] in ("sgemm_auto (kept dense (numpy))", "sgemm_auto (-)")
