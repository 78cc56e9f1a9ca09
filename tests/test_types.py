"""The shipped model files, the family records and the layout registry type-check with mypy ([tool.mypy] in
pyproject.toml names the files). mypy is in the `test` extra; without it the test is skipped rather than failed.
Slow: mypy reads the torch and transformers sources (about a minute without a cache, seconds with `.mypy_cache`)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e .[test])")
def test_mypy_is_clean():
    completed = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"mypy found problems:\n{completed.stdout}{completed.stderr}"
