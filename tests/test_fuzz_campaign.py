"""tools/fuzz_campaign.py counts the inputs each round tried from hypothesis' statistics."""

import importlib.util
import pathlib

import pytest

TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "fuzz_campaign.py"


@pytest.fixture(scope="module")
def campaign():
    spec = importlib.util.spec_from_file_location("fuzz_campaign", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("line", [
    "    - 193 passing examples, 2 failing examples, 7 invalid examples",  # hypothesis <= 6.15x
    "    - 193 passing, 2 failing, and 7 invalid test cases",  # later: CI read 0 inputs here
])
def test_both_statistics_formats_are_counted(campaign, line):
    assert campaign.EXAMPLE_COUNTS.findall(line) == [("193", "2", "7")]
