"""Whom ExaBGP runs as: never root. When bgpspeaker is root, the child switches to
``run_as`` (default ``nobody``) between fork and exec."""

from __future__ import annotations

import dataclasses
import pwd
import re
import stat
from pathlib import Path

from bgpspeaker.errors import ExabgpUnavailable

__all__ = ["DEFAULT_RUN_AS", "RunAs", "blocked_for", "lacks", "resolve_run_as", "user_name"]

DEFAULT_RUN_AS = "nobody"
"""Who ExaBGP runs as when bgpspeaker runs as root. A dedicated user is better still:
other daemons run as ``nobody`` too, and ExaBGP's user can read the MD5 key."""

_NUMERIC_USER = re.compile(r"^(\d{1,10})(?::(\d{1,10}))?$")


@dataclasses.dataclass(frozen=True, slots=True)
class RunAs:
    """The user ExaBGP runs as: name (for logs and ``exabgp.daemon.user``), uid and gid."""

    name: str
    uid: int
    gid: int


def user_name(uid: int) -> str:
    """``uid``'s login name, or the number when it has no passwd entry (containers often have none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def resolve_run_as(run_as: str | None, *, euid: int) -> RunAs | None:
    """Whom ExaBGP must switch to; None: it runs as bgpspeaker itself does.

    As root (``euid`` 0): ``run_as``, default ``nobody``; a user name, or ``UID`` or
    ``UID:GID`` for a user without a passwd entry. Never root itself. As any other
    user, ExaBGP runs as that user, and ``run_as`` may only name it. Raises
    ExabgpUnavailable naming the user when it does not exist or cannot be used.
    """
    if euid != 0:
        if run_as is None or run_as in (str(euid), user_name(euid)):
            return None
        raise ExabgpUnavailable(
            f"cannot run ExaBGP as {run_as!r}: bgpspeaker runs as {user_name(euid)!r}, and only root can switch users"
        )
    wanted = DEFAULT_RUN_AS if run_as is None else run_as
    numeric = _NUMERIC_USER.match(wanted)
    if numeric is not None:
        uid = int(numeric.group(1))
        gid = int(numeric.group(2)) if numeric.group(2) is not None else uid
        target = RunAs(user_name(uid), uid, gid)
    else:
        try:
            entry = pwd.getpwnam(wanted)
        except KeyError:
            raise ExabgpUnavailable(
                f"cannot run ExaBGP as user {wanted!r}: no such user on this node"
                " (create it, or name another user or a numeric UID:GID)"
            ) from None
        target = RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    if target.uid == 0 or target.gid == 0:
        raise ExabgpUnavailable(
            f"refusing to run ExaBGP as {wanted!r} (uid {target.uid}, gid {target.gid}): ExaBGP never runs as root"
        )
    return target


def blocked_for(path: Path, who: RunAs, *, need: int) -> str | None:
    """Why ``who`` cannot reach ``path`` by its mode bits (``need``: stat.S_IROTH or
    S_IXOTH for the file itself), or None. Owner, group (``who.gid`` only: ExaBGP runs
    with no supplementary groups) or other bits, as the kernel picks them; ACLs are not
    read, so this only warns."""
    for target in dict.fromkeys([path, path.resolve()]):
        for directory in reversed(target.parents):
            problem = lacks(directory, who, stat.S_IXOTH)
            if problem:
                return problem
        problem = lacks(target, who, need)
        if problem:
            return problem
    return None


def lacks(path: Path, who: RunAs, other_bit: int) -> str | None:
    try:
        info = path.stat()
    except OSError as error:
        return f"{path}: {error.strerror or error}"
    if info.st_uid == who.uid:
        bit = other_bit << 6
    elif info.st_gid == who.gid:
        bit = other_bit << 3
    else:
        bit = other_bit
    if info.st_mode & bit:
        return None
    return f"{path} (mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}, group gid {info.st_gid})"
