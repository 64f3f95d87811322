"""The linters and the type checker, as part of the suite: a change that breaks them fails here.

Each runs from the venv beside this interpreter with its configuration in pyproject.toml, the
same commands .pre-commit-config.yaml runs before a commit.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CHECKS = {
    "ruff-lint": ["ruff", "check", "."],
    "ruff-format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy"],
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_passes(name):
    """ruff's rules, its formatting and mypy's types hold for the whole configured tree."""
    executable, *args = CHECKS[name]
    command = [str(BIN / executable), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
