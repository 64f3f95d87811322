"""Network plumbing for worker "hosts": a bridge in the root namespace, one network namespace per host,
joined to the bridge by a veth pair, and the command prefix that runs a program inside a host.

Every object a run makes carries its run id in its name (PREFIX + run id), so a crashed run's
leftovers can be found and removed by name alone.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Interface names are at most 15 characters: PREFIX (3) + run id (4) + "br"/"v"+index (up to 4).
PREFIX = "iph"
NETNS_PREFIX = f"{PREFIX}-"
RUN_ID = re.compile(r"^[0-9a-f]{4}$")
# The runs' subnets: 10.213.X.0/24, X picked per run among those no interface uses.
SUBNET_BASE = "10.213"


class HarnessUnavailable(RuntimeError):
    """This machine cannot run the harness (not root, no `ip netns`, no `unshare`)."""


def why_unavailable() -> str:
    """Why this machine cannot run the harness, or "" when it can (tests skip with it)."""
    try:
        require_root_and_tools()
    except HarnessUnavailable as exc:
        return str(exc)
    return ""


def require_root_and_tools() -> None:
    """Refuse clearly unless we are root with `ip` (netns support) and `unshare` at hand."""
    if os.geteuid() != 0:
        raise HarnessUnavailable("the many-hosts harness makes network namespaces: run it as root")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            raise HarnessUnavailable(f"the many-hosts harness needs `{tool}` (iproute2, util-linux)")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode:
        raise HarnessUnavailable(f"`ip netns` does not work here: {probe.stderr.strip()}")
    # Root in a container without CAP_SYS_ADMIN/CAP_NET_ADMIN cannot make namespaces: find out now.
    probe = subprocess.run(["unshare", "--net", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode:
        raise HarnessUnavailable(f"this machine cannot make network namespaces: {probe.stderr.strip()}")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; with `check`, a failure raises with ip's own message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class RunNetwork:
    """The names and addresses of one run's network."""

    run_id: str
    subnet: str  # "10.213.X"

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.run_id}br"

    @property
    def bridge_ip(self) -> str:
        return f"{self.subnet}.1"

    def netns(self, host: str) -> str:
        return f"{NETNS_PREFIX}{self.run_id}-{host}"

    def veth(self, index: int) -> str:
        return f"{PREFIX}{self.run_id}v{index}"

    def peer(self, index: int) -> str:
        return f"{PREFIX}{self.run_id}p{index}"

    def host_ip(self, index: int) -> str:
        return f"{self.subnet}.{10 + index}"

    def create_bridge(self) -> None:
        """The bridge every host's veth joins, with the address hosts reach Redis and PostgreSQL on."""
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def create_host(self, host: str, index: int) -> None:
        """A namespace for `host` with loopback up and a veth to the bridge. No default route: nothing
        beyond the bridge is reachable, so a lookup of an outside name fails at once instead of timing out."""
        netns, veth, peer = self.netns(host), self.veth(index), self.peer(index)
        ip("netns", "add", netns)
        try:
            ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", netns)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("-n", netns, "link", "set", "lo", "up")
            ip("-n", netns, "addr", "add", f"{self.host_ip(index)}/24", "dev", peer)
            ip("-n", netns, "link", "set", peer, "up")
        except Exception:
            delete_netns(netns)
            ip("link", "del", veth, check=False)
            raise

    def exec_prefix(self, host: str) -> list[str]:
        """Run the command that follows inside `host`: its network namespace, and its own UTS namespace
        whose host name is `host` (so socket.gethostname(), and WorkerRegistration.host, say `host`)."""
        return [
            "ip",
            "netns",
            "exec",
            self.netns(host),
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            host,
        ]


def pick_subnet() -> str:
    """A 10.213.X subnet that no interface of the root namespace uses yet."""
    used = ip("-4", "-o", "addr", "show").stdout
    for x in range(1, 255):
        subnet = f"{SUBNET_BASE}.{x}"
        network = ipaddress.ip_network(f"{subnet}.0/24")
        if not any(ipaddress.ip_address(a) in network for a in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)", used)):
            return subnet
    raise RuntimeError(f"every {SUBNET_BASE}.X.0/24 subnet is in use")


def netns_pids(netns: str) -> list[int]:
    """Every process inside the namespace (what `ip netns pids` lists)."""
    result = ip("netns", "pids", netns, check=False)
    return [int(pid) for pid in result.stdout.split()] if result.returncode == 0 else []


def delete_netns(netns: str) -> None:
    """Kill every process left inside the namespace, then delete it (its veth pair goes with it)."""
    for pid in netns_pids(netns):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    ip("netns", "del", netns, check=False)


def run_namespaces(run_id: str | None = None) -> list[str]:
    """Namespaces of one run (of every run when `run_id` is None)."""
    names = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]
    prefix = f"{NETNS_PREFIX}{run_id}-" if run_id else NETNS_PREFIX
    return [name for name in names if name.startswith(prefix)]


def run_links(run_id: str | None = None) -> list[str]:
    """Interfaces of one run in the root namespace (of every run when `run_id` is None)."""
    names = re.findall(r"^\d+: ([^:@]+)[:@]", ip("-o", "link", "show").stdout, re.MULTILINE)
    pattern = re.compile(rf"^{PREFIX}{run_id or '[0-9a-f]{4}'}(br|v\d+)$")
    return [name for name in names if pattern.match(name)]


def remove_network(run_id: str | None = None) -> None:
    """Delete a run's namespaces (and whatever still runs in them), veths and bridge; every run's when None."""
    for netns in run_namespaces(run_id):
        delete_netns(netns)
    for link in run_links(run_id):
        ip("link", "del", link, check=False)
