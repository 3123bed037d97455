"""bgpspeaker's work directory: one per daemon, private, and never left behind.

It holds each peer's ExaBGP config (with the TCP MD5 key) and API socket. The entry
point calls ``remove_stale_workdirs()`` before ``create_workdir()`` at start, and
``remove_workdir()`` on every way out; what a SIGKILL or a crash leaves behind, the
next start in the same temp directory removes.

Names: ``bgpspeaker-<pid>-<random>``, the PID of the daemon that made it. A directory
is stale when that PID is gone, or now belongs to a process that is not bgpspeaker (the
PID was reused). Directories from versions before this module (``bgpspeaker-<random>``,
from ``tempfile.mkdtemp``) carry no PID: they are stale once ``LEGACY_MIN_AGE_S`` old.
Either way a directory is kept while it is not ours (owner uid) or while a live process
names a path inside it on its command line (an ExaBGP child names its config).
PIDs mean something only within one PID namespace: speakers in different PID
namespaces need different temp directories (a pod's own /tmp is).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

import structlog

__all__ = ["LEGACY_MIN_AGE_S", "PREFIX", "create_workdir", "remove_stale_workdirs", "remove_workdir"]

log = structlog.get_logger("bgpspeaker.workdir")

PREFIX = "bgpspeaker-"
LEGACY_MIN_AGE_S = 600.0
"""A work directory without a PID in its name is left alone until this old (last change):
an older bgpspeaker that made it may still be running."""

_CURRENT = re.compile(r"^bgpspeaker-(\d{1,10})-[A-Za-z0-9_]+$")
_LEGACY = re.compile(r"^bgpspeaker-[a-z0-9_]{8}$")  # tempfile.mkdtemp's 8 random characters
_PROC = Path("/proc")


def create_workdir(base: Path | None = None) -> Path:
    """Make and return a new ``bgpspeaker-<our pid>-<random>`` directory, mode 0700,
    owned by us, under ``base`` (default: ``tempfile.gettempdir()``). Raises OSError
    when it cannot be made. The supervisor of each peer makes its own subdirectory."""
    parent = Path(tempfile.gettempdir()) if base is None else base
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))


def remove_workdir(path: Path) -> None:
    """Remove ``path`` and everything in it. Idempotent (a missing path is fine) and never
    raises: a failure is logged (``workdir_remove_failed``). Never follows a symlink."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as error:
        log.warning("workdir_remove_failed", path=str(path), error=str(error))


def remove_stale_workdirs(base: Path | None = None) -> list[Path]:
    """Remove every stale work directory under ``base`` (default: ``tempfile.gettempdir()``)
    and return those removed; see the module docstring for "stale". Never raises: an
    unreadable ``base`` removes nothing, a directory that cannot be removed is logged."""
    parent = Path(tempfile.gettempdir()) if base is None else base
    try:
        entries = list(os.scandir(parent))
    except OSError as error:
        log.warning("workdir_scan_failed", path=str(parent), error=str(error))
        return []
    candidates = [Path(entry.path) for entry in entries if _stale_by_name(entry)]
    if not candidates:
        return []
    in_use = _paths_named_by_processes()
    removed = []
    for path in candidates:
        prefix = f"{path}/"
        if any(named == str(path) or named.startswith(prefix) for named in in_use):
            continue
        remove_workdir(path)
        if not os.path.lexists(path):
            removed.append(path)
    if removed:
        log.info("stale_workdirs_removed", paths=[str(path) for path in removed])
    return removed


def _stale_by_name(entry: os.DirEntry[str]) -> bool:
    """Ours, a real directory (no symlink), and its name says its daemon is gone."""
    current = _CURRENT.match(entry.name)
    legacy = current is None and _LEGACY.match(entry.name) is not None
    if current is None and not legacy:
        return False
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return False
    if current is not None:
        return not _is_live_speaker(int(current.group(1)))
    return time.time() - info.st_mtime >= LEGACY_MIN_AGE_S


def _is_live_speaker(pid: int) -> bool:
    """True when ``pid`` is this process, or a live process whose command line says
    bgpspeaker, or one we cannot tell about (kept: better a leftover than a live one's)."""
    if pid == os.getpid():
        return True
    try:
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
        if not cmdline:  # a zombie, or a process in the middle of exec
            state = (_PROC / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            return state != b"Z"
    except FileNotFoundError:
        if (_PROC / "self").exists():
            return False
        return _pid_exists(pid)  # no procfs: liveness is all we can tell
    except (OSError, IndexError):
        return True  # cannot tell (hidepid): keep it
    return b"bgpspeaker" in cmdline


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _paths_named_by_processes() -> list[str]:
    """Every absolute path on a live process's command line (ExaBGP names its config)."""
    named: list[str] = []
    try:
        pids = [entry.name for entry in os.scandir(_PROC) if entry.name.isdigit()]
    except OSError:
        return named
    for pid in pids:
        try:
            cmdline = (_PROC / pid / "cmdline").read_bytes()
        except OSError:
            continue
        named.extend(arg.decode("utf-8", "replace") for arg in cmdline.split(b"\0") if arg.startswith(b"/"))
    return named
