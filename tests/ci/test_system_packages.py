"""scripts/ensure_system_packages.sh, which test.sh sources: what it installs, and what it says when it cannot.

The script is run for real with a PATH of our making, so it sees exactly the programs a test
puts there. apt-get is a stand-in that records its arguments and, on install, puts the
programs of the packages it can fake in place, as the real one would; nothing is installed on
this machine. /usr/bin/chromium cannot be hidden, so what is expected of chromium follows
whether this machine has it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ensure_system_packages.sh"
BASH = shutil.which("bash") or "/bin/bash"
HAS_CHROMIUM = os.access("/usr/bin/chromium", os.X_OK)
FAKEABLE = ["docker-compose", "redis-server", "cmake", "iproute2"]  # their programs are found on PATH

FAKE_APT_GET = """#!{bash}
echo "DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}} $*" >> {log}
[ "$1" = install ] || exit 0
[ {install_rc} -eq 0 ] || exit {install_rc}
for package in "$@"; do
  case "$package" in
    docker-compose|redis-server|cmake) printf '#!{bash}\\n' > {bin}/$package; /bin/chmod 755 {bin}/$package ;;
    iproute2) printf '#!{bash}\\n' > {bin}/ip; /bin/chmod 755 {bin}/ip ;;
  esac
done
"""


class Bin:
    """A directory that is the whole PATH of the script, with the programs a test puts there."""

    def __init__(self, path: Path):
        self.path = path
        self.log = path / "apt-get.log"
        self.log.touch(mode=0o666)
        self.log.chmod(0o666)

    def add(self, name: str, text: str = "#!{bash}\n", **fields) -> None:
        program = self.path / name
        program.write_text(text.format(bash=BASH, log=self.log, bin=self.path, **fields))
        program.chmod(0o755)

    def add_apt_get(self, install_rc: int = 0) -> None:
        self.add("apt-get", FAKE_APT_GET, install_rc=install_rc)

    def apt_calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def run(self, *, as_root: bool = True, command: str | None = None) -> subprocess.CompletedProcess:
        prefix = []
        if not as_root and os.geteuid() == 0:
            prefix = [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        elif as_root and os.geteuid() != 0:
            pytest.skip("runs the script as root; this test process is not root")
        argv = [BASH, "-c", command] if command else [BASH, str(SCRIPT)]
        return subprocess.run(
            [*prefix, *argv],
            cwd=REPO,
            env={"PATH": str(self.path), "HOME": str(self.path)},
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def bin_dir():
    # Not under tmp_path: the non-root run must be able to read it.
    with tempfile.TemporaryDirectory() as name:
        os.chmod(name, 0o755)
        yield Bin(Path(name))


def expected_missing(*also: str) -> list[str]:
    return (["chromium"] if not HAS_CHROMIUM else []) + list(also)


def test_as_root_it_installs_what_is_missing_with_apt_get(bin_dir):
    bin_dir.add_apt_get()
    result = bin_dir.run()
    assert result.returncode == 0, result.stderr
    missing = " ".join(expected_missing(*FAKEABLE))
    assert bin_dir.apt_calls() == [
        "DEBIAN_FRONTEND= update -qq",
        f"DEBIAN_FRONTEND=noninteractive install -y -qq {missing}",
    ]
    assert f"Installing Debian packages the tests need: {missing}" in result.stderr
    if HAS_CHROMIUM:
        assert "could not install" not in result.stderr
    else:  # the stand-in cannot put chromium in /usr/bin: the script checks again and says so
        assert "could not install chromium;" in result.stderr


def test_nothing_is_installed_when_the_programs_are_there(bin_dir):
    bin_dir.add_apt_get()
    bin_dir.add("redis-server")
    bin_dir.add("docker-compose")
    bin_dir.add("cmake")
    bin_dir.add("ip")
    result = bin_dir.run()
    assert result.returncode == 0, result.stderr
    if HAS_CHROMIUM:
        assert bin_dir.apt_calls() == [] and result.stderr == ""
    else:
        assert bin_dir.apt_calls()[-1] == "DEBIAN_FRONTEND=noninteractive install -y -qq chromium"


def test_docker_compose_v2_counts_as_the_compose_client(bin_dir):
    bin_dir.add_apt_get()
    bin_dir.add("redis-server")
    bin_dir.add("cmake")
    bin_dir.add("ip")
    bin_dir.add("docker", '#!{bash}\n[ "$1 $2" = "compose version" ]\n')
    bin_dir.run()
    assert not any("docker-compose" in call for call in bin_dir.apt_calls())


def test_without_root_it_says_what_to_run_and_carries_on(bin_dir):
    bin_dir.add_apt_get()
    result = bin_dir.run(as_root=False)
    assert result.returncode == 0, result.stderr
    assert bin_dir.apt_calls() == []
    missing = " ".join(expected_missing(*FAKEABLE))
    assert f"sudo sh -c 'apt-get update && apt-get install -y {missing}'" in result.stderr
    assert "until then the tests that run them fail" in result.stderr


def test_without_apt_get_it_says_so_and_carries_on(bin_dir):
    result = bin_dir.run()
    assert result.returncode == 0, result.stderr
    assert "not a Debian machine (no apt-get)" in result.stderr
    assert "redis-server" in result.stderr and "docker-compose" in result.stderr


def test_test_sh_goes_on_when_apt_get_fails(bin_dir):
    """test.sh sources the script under `set -e`: a failed apt-get must not end the test run unseen."""
    bin_dir.add_apt_get(install_rc=100)
    result = bin_dir.run(command=f"set -euo pipefail; source {SCRIPT}; echo carried on")
    assert result.returncode == 0 and result.stdout == "carried on\n", result.stderr
    assert len(bin_dir.apt_calls()) == 2
    assert f"could not install {' '.join(expected_missing(*FAKEABLE))};" in result.stderr


def test_the_suite_programs_are_the_ones_checked():
    """Each program the tests start is one the script checks, so a new one cannot be forgotten silently."""
    script = SCRIPT.read_text()
    assert '"/usr/bin/chromium"' in (REPO / "tests" / "compat" / "browser.py").read_text()
    assert "[ -x /usr/bin/chromium ]" in script
    assert 'which("redis-server")' in (REPO / "tests" / "distributed" / "cluster.py").read_text()
    assert "command -v redis-server" in script
    assert 'which("cmake")' in (REPO / "benchmarks" / "llama_server.py").read_text()
    assert "command -v cmake" in script
    assert 'for tool in ("ip", "unshare")' in (REPO / "benchmarks" / "hosts" / "network.py").read_text()
    assert "command -v ip " in script  # unshare is util-linux's, which Debian always has
    assert "for package in chromium docker-compose redis-server cmake iproute2; do" in script
    assert "source scripts/ensure_system_packages.sh" in (REPO / "test.sh").read_text()
    assert "apt-get" not in (REPO / ".ci" / "run").read_text(), ".ci/run leaves installing to test.sh"
