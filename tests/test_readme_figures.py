"""Every README figure names the command that prints it, and tools/readme_figures.sh
runs exactly that command into the folder of docs/results/ the README points to."""

import json
import pathlib
import re
import shlex

REPO = pathlib.Path(__file__).resolve().parents[1]
README_COMMAND = re.compile(r"`sparsegemm bench ([^`]*?)\s*--out docs/results/([\w-]+)`")


def _readme_commands() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text() + (REPO / "docs/results/README.md").read_text()
    commands: dict[str, list[str]] = {}
    for args, folder in README_COMMAND.findall(text):
        tokens = shlex.split(args)
        assert commands.setdefault(folder, tokens) == tokens, f"two commands for {folder}"
    return commands


def _script_figures() -> dict[str, list[str]]:
    script = (REPO / "tools/readme_figures.sh").read_text().replace("\\\n", " ")
    figures = {}
    for line in script.splitlines():
        tokens = shlex.split(line, comments=True)
        if len(tokens) >= 2 and tokens[0] == "figure":
            figures[tokens[1]] = tokens[2:]
    return figures


def test_every_readme_figure_command_is_the_one_the_script_runs():
    readme, script = _readme_commands(), _script_figures()
    assert {"crossover", "block-shapes", "bert-ffn", "e2e"} <= set(readme)
    for folder, tokens in readme.items():
        if folder.startswith("floors-"):
            continue  # documented with "(and --warm)"; the script runs both
        assert script.get(folder) == tokens, folder


def test_committed_results_come_from_the_readme_command():
    readme = _readme_commands()
    for folder, tokens in readme.items():
        for name in ("results.json", "e2e.json"):  # --e2e-only writes only e2e.json
            path = REPO / "docs/results" / folder / name
            if not path.exists():
                continue  # not measured yet
            command = json.loads(path.read_text())["metadata"]["command"]
            ran = [t for t in shlex.split(command)[2:] if t != "--no-progress"]
            assert ran == [*tokens, "--out", f"docs/results/{folder}"], path
