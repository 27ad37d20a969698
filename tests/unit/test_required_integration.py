"""The suite's own rule: where integration tests are required, a skip fails the run."""

import os
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
SUITE_CONFTEST = (Path(__file__).parents[1] / "conftest.py").read_text()
SKIPPING_TEST = """
import pytest

@pytest.mark.integration
def test_needs_root():
    pytest.skip("no root here")
"""


@pytest.mark.parametrize("required,status", [("1", 1), ("0", 0)])
def test_skipped_integration_test_fails_only_when_required(pytester, monkeypatch, required, status):
    monkeypatch.setenv("APPJAIL_REQUIRE_INTEGRATION", required)
    pytester.makeconftest(SUITE_CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n")
    pytester.makepyfile(test_skip=SKIPPING_TEST)
    result = pytester.runpytest_subprocess()
    assert result.ret == status


def test_the_unit_and_once_per_run_tests_run_in_the_first_backends_pass_only(tmp_path):
    """scripts/test's passes, run with a stand-in pytest that writes down what each was given."""
    script = (Path(__file__).parents[2] / "scripts/test").read_text()
    passes = script[script.index("status=0"):]
    stand_in = tmp_path / ".venv/bin/python"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text('#!/bin/sh\necho "$APPJAIL_FIREWALL $APPJAIL_ONCE_PER_RUN_DONE $*" >> passes\n')
    stand_in.chmod(0o755)
    subprocess.run(["bash", "-euo", "pipefail", "-c", passes, "test", "-x"], cwd=tmp_path, check=True,
                   env={"PATH": os.environ["PATH"]})
    assert (tmp_path / "passes").read_text().splitlines() == [
        "nftables 0 -m pytest -x",
        "xtables 1 -m pytest --ignore=tests/unit --ignore=tests/desktop -x"]
