"""The import contracts in .importlinter: layers point down, engines stay framework-free, no cycles."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("inference_platform", "api", "serving", "monitoring", "models_registry", "engines")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", ".importlinter"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_the_code_keeps_every_import_contract():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def copy_of_the_code(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path)
    return tmp_path


def test_an_upward_import_breaks_the_layers(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "monitoring" / "upward.py").write_text("from serving import dispatch\n")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "monitoring is not allowed to import serving" in result.stdout


def test_django_in_engines_breaks_the_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "engines" / "framework.py").write_text("import django.conf\n")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "engines is not allowed to import django" in result.stdout and "engines.framework -> django" in result.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "serving" / "route.py").write_text(
        (root / "serving" / "route.py").read_text() + "\nfrom . import lifecycle\n"
    )
    result = lint_imports(root)
    assert result.returncode == 1
    assert "No cycles are allowed in serving" in result.stdout
