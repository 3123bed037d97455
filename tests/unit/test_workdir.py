"""Work directories: made private, removed when their daemon is gone, never while it lives.

Real processes give the PIDs: a child that has exited (a dead PID), this test process
(alive, and always its own), and children blocked on stdin (alive until we close it),
whose command line does or does not say bgpspeaker.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bgpspeaker.workdir import LEGACY_MIN_AGE_S, create_workdir, remove_stale_workdirs, remove_workdir
from lab.netns import wait_until

WAIT_FOR_STDIN = "import sys; sys.stdin.read()"


def dead_pid() -> int:
    """The PID of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    return child.pid


@pytest.fixture
def live_children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children started by the test (blocked on stdin); ended by PID afterwards."""
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for child in children:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def live_child(children: list[subprocess.Popen[bytes]], *argv: str) -> int:
    """A live child whose command line ends in ``argv``; its PID once /proc shows that
    command line (right after exec it is briefly empty)."""
    child = subprocess.Popen([sys.executable, "-c", WAIT_FOR_STDIN, *argv], stdin=subprocess.PIPE)
    children.append(child)
    cmdline = Path(f"/proc/{child.pid}/cmdline")
    wait_until(lambda: WAIT_FOR_STDIN.encode() in cmdline.read_bytes(), timeout_s=10, desc="the child's command line")
    return child.pid


def workdir(base: Path, name: str, *, with_config: bool = True) -> Path:
    """A work directory as the daemon leaves it: a peer subdirectory with a 0600 config."""
    path = base / name
    (path / "tor-a").mkdir(parents=True, mode=0o700)
    if with_config:
        (path / "tor-a" / "exabgp.conf").write_text("md5-password c2VjcmV0;\n")
        (path / "tor-a" / "exabgp.conf").chmod(0o600)
    return path


def test_create_workdir_is_private_and_named_after_this_process(tmp_path: Path) -> None:
    """bgpspeaker-<our pid>-<random>, mode 0700, owned by us; two calls, two directories."""
    first, second = create_workdir(tmp_path), create_workdir(tmp_path)
    assert first != second
    for path in (first, second):
        assert path.parent == tmp_path
        assert path.name.startswith(f"bgpspeaker-{os.getpid()}-")
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.geteuid()


def test_create_workdir_defaults_to_the_temp_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No base: tempfile.gettempdir() (TMPDIR)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert create_workdir().parent == tmp_path


def test_remove_workdir_is_idempotent(tmp_path: Path) -> None:
    """Removes everything under it; a second call (or a missing path) is no error."""
    path = workdir(tmp_path, "bgpspeaker-1-abc")
    remove_workdir(path)
    assert not path.exists()
    remove_workdir(path)
    remove_workdir(tmp_path / "never-existed")


def test_remove_workdir_does_not_follow_a_symlink(tmp_path: Path) -> None:
    """A symlink in the work directory's place: the target survives, the failure is logged."""
    target = workdir(tmp_path, "precious")
    link = tmp_path / "bgpspeaker-1-abc"
    link.symlink_to(target)
    with capture_logs() as logs:
        remove_workdir(link)
    assert (target / "tor-a" / "exabgp.conf").exists()
    assert [entry["event"] for entry in logs] == ["workdir_remove_failed"]


def test_a_dead_daemons_directory_is_removed_a_live_ones_kept(
    tmp_path: Path, live_children: list[subprocess.Popen[bytes]]
) -> None:
    """Dead PID or a PID now used by something else: removed. This process, or a live
    bgpspeaker: kept. Only the removed ones are returned."""
    dead = workdir(tmp_path, f"bgpspeaker-{dead_pid()}-k3j2h1g0")
    reused = workdir(tmp_path, f"bgpspeaker-{live_child(live_children)}-aaaa1111")
    ours = workdir(tmp_path, f"bgpspeaker-{os.getpid()}-bbbb2222")
    speaker = workdir(tmp_path, f"bgpspeaker-{live_child(live_children, 'bgpspeaker', 'run')}-cccc3333")
    removed = remove_stale_workdirs(tmp_path)
    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert ours.exists() and speaker.exists()


def test_a_directory_a_live_process_names_is_kept(tmp_path: Path, live_children: list[subprocess.Popen[bytes]]) -> None:
    """The daemon is gone but something still runs with a path inside on its command line
    (an orphaned ExaBGP names its config): kept."""
    used = workdir(tmp_path, f"bgpspeaker-{dead_pid()}-dddd4444")
    live_child(live_children, "server", str(used / "tor-a" / "exabgp.conf"))
    assert remove_stale_workdirs(tmp_path) == []
    assert used.exists()


def test_legacy_directories_go_only_when_old(tmp_path: Path) -> None:
    """bgpspeaker-XXXXXXXX (mkdtemp, no PID): kept while younger than LEGACY_MIN_AGE_S, removed after."""
    fresh = workdir(tmp_path, "bgpspeaker-a1b2c3d4")
    old = workdir(tmp_path, "bgpspeaker-e5f6g7h8")
    long_ago = time.time() - LEGACY_MIN_AGE_S - 60
    os.utime(old, (long_ago, long_ago))
    assert remove_stale_workdirs(tmp_path) == [old]
    assert fresh.exists() and not old.exists()


def test_only_our_own_real_directories_with_the_right_names_are_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other names, plain files, symlinks (even to a stale-looking directory) are left alone;
    so is everything when another user owns it."""
    gone = dead_pid()
    keep = [
        workdir(tmp_path, "bgpspeaker"),
        workdir(tmp_path, "bgpspeaker-notapid-x"),
        workdir(tmp_path, f"other-{gone}-abcd1234"),
        workdir(tmp_path, "bgpspeaker-short"),
    ]
    plain = tmp_path / f"bgpspeaker-{gone}-file0000"
    plain.write_text("not a directory")
    target = workdir(tmp_path, "target")
    link = tmp_path / f"bgpspeaker-{gone}-link0000"
    link.symlink_to(target)
    assert remove_stale_workdirs(tmp_path) == []
    assert all(path.exists() for path in [*keep, plain, target]) and link.is_symlink()

    stale = workdir(tmp_path, f"bgpspeaker-{gone}-eeee5555")
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    assert remove_stale_workdirs(tmp_path) == []
    assert stale.exists()


def test_an_unreadable_base_removes_nothing(tmp_path: Path) -> None:
    """A missing temp directory: an empty list and a log line, no exception."""
    with capture_logs() as logs:
        assert remove_stale_workdirs(tmp_path / "missing") == []
    assert [entry["event"] for entry in logs] == ["workdir_scan_failed"]


def test_a_fresh_workdir_survives_the_cleanup_that_precedes_it(tmp_path: Path) -> None:
    """The start-up order (clean up, then create; or create, then clean up) never loses our own."""
    ours = create_workdir(tmp_path)
    assert remove_stale_workdirs(tmp_path) == []
    assert ours.exists()
