"""ExaBGP never runs as root: the speaker runs as root here, and every ExaBGP child runs as
``nobody`` (its API relay runs inside it: no process of its own); the session still comes up
and routes still flow through the API socket; the peer's files belong to that user alone; a
SIGKILLed speaker still takes its ExaBGP along (the parent-death signal is set after the uid
switch); a retired peer's directory, with its MD5 key, is removed while the daemon runs on."""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
from pathlib import Path

from bgpspeaker.workdir import remove_workdir
from lab.kubeapi import endpoint_slice, service
from lab.netns import http_get, pid_alive, wait_until
from lab.topology import CONFIG_DIR
from tests.integration.conftest import Topology

VIP = "192.0.2.10/32"
STATUS_URL = "http://127.0.0.1:9480/status"  # the default --status-address


def ids(pid: int, field: str) -> list[int]:
    """The ``Uid:`` or ``Gid:`` line of /proc/PID/status: real, effective, saved, filesystem."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return [int(value) for value in line.split()[1:]]
    raise AssertionError(f"no {field}: line for PID {pid}")


def groups(pid: int) -> list[int]:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Groups:"))
    return [int(value) for value in line.split()[1:]]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def exabgp_pids(topology: Topology) -> list[int]:
    """Every peer's ExaBGP PID, from the speaker's /status."""
    _, body = http_get(topology.speaker.netns, STATUS_URL)
    return [peer["exabgp_pid"] for peer in json.loads(body)["peers"] if peer["exabgp_pid"]]


def announce(topology: Topology) -> None:
    topology.api.apply(service("default", "web", ips=["192.0.2.10"]))
    topology.api.apply(
        endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)])
    )


def test_exabgp_never_runs_as_root(topology: Topology) -> None:
    """Speaker uid 0; each ExaBGP: real, effective, saved and fs uid and gid nobody's, no
    supplementary groups, no child (the relay runs in it); session Established in FRR and a
    route best through the API socket."""
    nobody = pwd.getpwnam("nobody")
    announce(topology)
    topology.speaker.start()
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a")
    wait_until(lambda: VIP in topology.frr.best_paths(), timeout_s=15, desc=f"{VIP} best in FRR")
    assert topology.frr.neighbor("10.0.0.2")["bgpState"] == "Established"
    assert ids(topology.speaker.pid, "Uid")[:2] == [0, 0]

    pids = wait_until(lambda: exabgp_pids(topology), timeout_s=10, desc="exabgp_pid in /status")
    assert sorted(pids) == sorted(
        child
        for child in children(topology.speaker.pid)
        if b"bgpspeaker.exabgp.launcher" in Path(f"/proc/{child}/cmdline").read_bytes()
    )
    assert [child for pid in pids for child in children(pid)] == [], "the API relay runs inside ExaBGP"
    for pid in pids:
        uids, gids = ids(pid, "Uid"), ids(pid, "Gid")
        print(f"PID {pid}: Uid {uids} Gid {gids} Groups {groups(pid)}")
        assert uids == [nobody.pw_uid] * 4 and 0 not in uids
        assert gids == [nobody.pw_gid] * 4 and 0 not in gids
        assert groups(pid) == []
    assert topology.speaker.wait_event("exabgp_started")["user"] == "nobody"

    config = Path(Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")[-2].decode())
    for path, mode in ((config, 0o600), (config.parent / "api.sock", 0o600), (config.parent, 0o700)):
        info = path.lstat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (nobody.pw_uid, nobody.pw_gid, mode), path
    top = config.parent.parent.lstat()  # bgpspeaker's own: root's, passable but not readable by others
    assert top.st_uid == 0 and stat.S_IMODE(top.st_mode) & 0o077 == 0o001


def test_a_sigkilled_speaker_takes_exabgp_along(topology: Topology) -> None:
    """PR_SET_PDEATHSIG survives the switch to nobody: SIGKILL the root speaker, ExaBGP dies,
    and FRR drops the session."""
    topology.speaker.start()
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a")
    pids = wait_until(lambda: exabgp_pids(topology), timeout_s=10, desc="exabgp_pid in /status")
    assert pids and all(ids(pid, "Uid")[1] != 0 for pid in pids)
    workdir = Path(Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")[-2].decode()).parent.parent
    os.kill(topology.speaker.pid, signal.SIGKILL)
    topology.speaker.wait_exit(timeout_s=5)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout_s=5, desc="ExaBGP gone")
    wait_until(
        lambda: topology.frr.neighbor("10.0.0.2").get("bgpState") != "Established",
        timeout_s=10,
        desc="FRR drops the session",
    )
    remove_workdir(workdir)  # what a SIGKILL leaves, the next start removes (remove_stale_workdirs)


def test_a_retired_peers_directory_is_removed_while_the_daemon_runs(topology: Topology) -> None:
    """Rename the peer (same router) by reload: the old peer's ExaBGP stops and its directory,
    config and MD5 key included, is gone; the new peer's is there, and the session comes back."""
    base = (CONFIG_DIR / "speaker.yaml").read_text()
    topology.speaker.start()
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a")
    old_pid = wait_until(lambda: exabgp_pids(topology), timeout_s=10, desc="exabgp_pid in /status")[0]
    old_dir = Path(Path(f"/proc/{old_pid}/cmdline").read_bytes().split(b"\0")[-2].decode()).parent
    assert old_dir.name == "tor-a" and (old_dir / "exabgp.conf").exists()

    topology.speaker.reload(base.replace("name: tor-a", "name: tor-renamed"))
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-renamed")
    wait_until(lambda: not old_dir.exists(), timeout_s=10, desc=f"{old_dir} removed")
    assert not pid_alive(old_pid)
    assert (old_dir.parent / "tor-renamed" / "exabgp.conf").exists()
