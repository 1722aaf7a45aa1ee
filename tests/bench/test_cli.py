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
from sparsegemm.bench.environment import SPIN_ENV
from sparsegemm.bench.cli import main
from sparsegemm.bench.compare import compare_documents, compare_files
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
        assert float(row["speedup"]) == pytest.approx(
            float(row["baseline_time_s"]) / float(row["time_median_s"])
        )


def test_json_has_machine_metadata_and_break_even(quick_run):
    document = load_json(str(quick_run / "results.json"))
    metadata = document["metadata"]
    assert metadata["cpu_model"]
    assert metadata["sparsegemm"]["isa"] in ("scalar", "avx2", "avx512")
    assert metadata["threads"] >= 1 and metadata["numpy"] and metadata["scipy"]
    assert "threadpools" in metadata and "spin_env" in metadata
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
            "useful_gflops",
            "effective_gflops",
            "baseline_gflops",
            "max_rel_error",
            "remeasured",
            "steady",
        }
        for r in document["results"]
    )


def test_report_states_break_even_per_shape_and_batch(quick_run):
    report = (quick_run / "report.md").read_text()
    assert re.search(r"\| 64x128 \| unstructured \| 1 \|", report)
    assert re.search(r"\| 64x128 \| unstructured \| 8 \|", report)
    assert "speedup at 90%" in report


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
        "import sys, sparsegemm.bench.cli, sparsegemm.bench.suite, sparsegemm.bench.e2e; "
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
        not in (*SPIN_ENV, "SPARSEGEMM_BENCH_REEXEC")
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


def test_console_script_reexecutes_with_the_spin_settings(tmp_path):
    done = _run_console(
        ["bench", "--quick-test", "--no-progress", "--no-plot", "--formats", "sgemm_csr"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    metadata = load_json(str(tmp_path / "bench_results" / "results.json"))["metadata"]
    assert metadata["spin_env_applied"]
    assert metadata["spin_env"]["KMP_BLOCKTIME"] == "1"
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
    # With the spin settings already present no re-execution happens; the help is the same.
    with_spin = subprocess.run(
        [sys.executable, "-c", ("import sys; from sparsegemm.bench.cli import main; "
                                "sys.argv = ['sparsegemm', '--help']; sys.exit(main())")],
        env={**os.environ, **SPIN_ENV}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert with_spin.stdout == without.stdout


def test_bare_console_command_prints_help_and_runs_nothing(tmp_path):
    done = _run_console([], tmp_path)
    assert done.returncode == 2
    assert done.stdout.startswith("usage: sparsegemm [-h] {bench}")
    assert not (tmp_path / "bench_results").exists()


def test_bench_flags_still_work_under_the_subcommand(capsys):
    assert main(["bench", "--e2e", "--list-formats"]) == 0
    assert "sgemm_csr" in capsys.readouterr().out
