"""The whole repository passes the ruff rule set in pyproject.toml ([tool.ruff.lint]: pycodestyle, pyflakes, isort,
bugbear, pyupgrade). ruff is in the `test` extra; without it the test is skipped rather than failed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -e .[test])")
def test_ruff_check_is_clean():
    completed = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, f"ruff check . found problems:\n{completed.stdout}{completed.stderr}"
