"""The suite's own rule: where integration tests are required, a skip fails the run."""

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
