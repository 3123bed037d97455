"""The supervisor's pure decisions: why a session is not up (``diagnose``) and whom ExaBGP runs as.

The reasons and log lines below are ExaBGP 5.0.15's own texts, as its source writes them
(paths under .venv/lib/python3*/site-packages/exabgp/), or the launcher's
(bgpspeaker/exabgp/launcher.py, which logs the connect errno ExaBGP drops, formatted with
ExaBGP's util/errstr.py). Each was also seen in a real run against FRR in a namespace.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os

import pytest

from bgpspeaker.config import PeerConfig
from bgpspeaker.errors import ExabgpUnavailable
from bgpspeaker.exabgp.diagnosis import FailureCause, diagnose, is_evidence
from bgpspeaker.exabgp.privileges import RunAs, resolve_run_as
from tests.unit.test_peers import peer  # tor-a, 10.0.0.1, eBGP 64513 -> 64512 unless fields say otherwise

ROUTER_ID = ipaddress.ip_address("10.0.0.2")

# reactor/peer.py, Peer._run: the reason of the API "down" event.
NOTIFY_RECEIVED_BAD_AS = "notification received (2,2)"  # self._reset(f'notification received ({code},{subcode})')
NOTIFY_SENT_BAD_AS = "notification sent (2,2)"  # self._reset(f'notification sent ({code},{subcode})')
CLOSING = "closing connection"  # self._reset('closing connection', network): every NetworkError
PROCESS = "process problem"  # self._reset('process problem', process)

# bgpspeaker/exabgp/launcher.py (_report_connect_errors), in reactor/network/tcp.py connect()'s words.
REFUSED = "outgoing-1      Could not connect to peer 10.0.0.1:179 ([Errno ECONNREFUSED] [Errno 111] Connection refused)"
HOST_UNREACHABLE = (
    "outgoing-1      Could not connect to peer 10.0.0.1:179 ([Errno EHOSTUNREACH] [Errno 113] No route to host)"
)
TIMED_OUT = (
    "outgoing-1      Could not connect to peer 10.0.0.1:179 ([Errno ETIMEDOUT] [Errno 110] Connection timed out)"
)
# reactor/network/tcp.py connect(): NotConnected(f'Could not connect to peer {ip}:{port} ({errstr(exc)})'),
# returned by Outgoing._connect, logged by the launcher.
NET_UNREACHABLE = (
    "outgoing-1      Could not connect to peer 10.0.0.1:179 ([Errno ENETUNREACH] [Errno 101] Network is unreachable)"
)
# reactor/network/tcp.py bind(): BindingError(f'Could not bind to local ip {ip} - {exc!s}').
BIND_FAILED = "outgoing-1      Could not bind to local ip 10.0.0.99 - [Errno 99] Cannot assign requested address"
# reactor/network/connection.py _reader(): the router closed the TCP connection (FRR does so
# for a neighbor it does not have, or one that is shut down).
LOST = "outgoing-1      outgoing-1 10.0.0.2-10.0.0.1 10.0.0.1 lost TCP session with peer"
# reactor/peer.py _close() at debug level: f'peer reset, message [{message}] error[{error}]'.
CLOSED_BY_REMOTE = (
    "outgoing-1      peer reset, message [closing connection] error[the TCP connection was closed by the remote end]"
)
# reactor/network/connection.py close(): printed for every failure, says nothing about why.
CLOSE_NOISE = "outgoing-1      outgoing-1 10.0.0.2-10.0.0.1, closing connection"


EBGP = peer()
EBGP_MULTIHOP = peer(ebgpMultiHop=2)
IBGP = peer(peerASN=64513)
SOURCED = peer(sourceAddress="10.0.0.99")


@dataclasses.dataclass(frozen=True)
class Case:
    desc: str
    reason: str
    lines: tuple[str, ...]
    want_cause: FailureCause
    want_in_hint: tuple[str, ...] = ()
    not_in_hint: tuple[str, ...] = ()
    peer: PeerConfig = EBGP
    md5: bool = False


CASES = [
    Case(
        "bad peer AS from the router names our AS and remote-as, not MD5 or TTL",
        NOTIFY_RECEIVED_BAD_AS,
        (CLOSE_NOISE,),
        FailureCause.NOTIFICATION,
        ("Bad Peer AS", "sent by the router", "remote-as 64513"),
        ("MD5", "ebgpMultiHop"),
        md5=True,
    ),
    Case(
        "bad peer AS sent by ExaBGP points at peerASN",
        NOTIFY_SENT_BAD_AS,
        (),
        FailureCause.NOTIFICATION,
        ("Bad Peer AS", "sent by ExaBGP", "peerASN 64512"),
        ("ebgpMultiHop",),
    ),
    Case(
        "bad BGP identifier from the router names our router ID",
        "notification received (2,3)",
        (),
        FailureCause.NOTIFICATION,
        ("Bad BGP Identifier", "10.0.0.2", "routerID"),
    ),
    Case(
        "unacceptable hold time names holdTime",
        "notification received (2,6)",
        (),
        FailureCause.NOTIFICATION,
        ("Unacceptable Hold Time", "holdTime 90s"),
    ),
    Case(
        "an OPEN error without a known subcode still names the OPEN's settings",
        "notification received (2,0)",
        (),
        FailureCause.NOTIFICATION,
        ("OPEN message error", "myASN 64513", "peerASN 64512"),
    ),
    Case(
        "authentication notification points at the MD5 password",
        "notification received (2,5)",
        (),
        FailureCause.NOTIFICATION,
        ("Authentication", "MD5"),
    ),
    Case(
        "administrative shutdown on the router",
        "notification received (6,2)",
        (),
        FailureCause.NOTIFICATION,
        ("Cease / Administrative Shutdown", "shut down"),
    ),
    Case(
        "connection rejected: no neighbor for us there",
        "notification received (6,5)",
        (),
        FailureCause.NOTIFICATION,
        ("Connection Rejected", "no neighbor"),
    ),
    Case(
        "hold timer expired on our side: the router went quiet",
        "notification sent (4,0)",
        (),
        FailureCause.NOTIFICATION,
        ("Hold timer expired", "holdTime 90s"),
    ),
    Case(
        "an unknown code is reported as it came",
        "notification received (9,9)",
        (),
        FailureCause.NOTIFICATION,
        ("NOTIFICATION 9/9", "unknown error"),
    ),
    Case(
        "a NOTIFICATION wins over older connect errors in the log",
        NOTIFY_RECEIVED_BAD_AS,
        (REFUSED,),
        FailureCause.NOTIFICATION,
        ("Bad Peer AS",),
        ("refused",),
    ),
    Case(
        "connection refused: router down, not listening, or wrong peerPort; no TTL or MD5 blame",
        CLOSING,
        (CLOSE_NOISE, REFUSED),
        FailureCause.REFUSED,
        ("connection refused", "10.0.0.1:179", "peerPort"),
        ("MD5", "ebgpMultiHop"),
        md5=True,
    ),
    Case(
        "accepted and closed at once: the router has no such neighbor",
        CLOSING,
        (CLOSE_NOISE, LOST),
        FailureCause.REFUSED,
        ("closed it without a NOTIFICATION", "no neighbor"),
        ("ebgpMultiHop",),
    ),
    Case(
        "ExaBGP's debug text for a close by the router reads the same",
        CLOSING,
        (CLOSED_BY_REMOTE,),
        FailureCause.REFUSED,
        ("no neighbor",),
    ),
    Case(
        "network unreachable: routing on this node, not TTL",
        "",
        (NET_UNREACHABLE,),
        FailureCause.NO_ROUTE,
        ("no route to 10.0.0.1", "routing table"),
        ("ebgpMultiHop", "MD5"),
    ),
    Case(
        "no route to host on eBGP at TTL 1: ICMP time-exceeded looks like this, so ebgpMultiHop is named",
        CLOSING,
        (HOST_UNREACHABLE,),
        FailureCause.NO_ROUTE,
        ("no route to host 10.0.0.1", "ARP", "ebgpMultiHop"),
        ("MD5",),
    ),
    Case(
        "no route to host with multihop set: no TTL blame",
        CLOSING,
        (HOST_UNREACHABLE,),
        FailureCause.NO_ROUTE,
        ("no route to host",),
        ("ebgpMultiHop",),
        peer=EBGP_MULTIHOP,
    ),
    Case(
        "sourceAddress that is not on this node",
        "",
        (BIND_FAILED,),
        FailureCause.NO_ROUTE,
        ("sourceAddress 10.0.0.99", "not an address of this node"),
        peer=SOURCED,
    ),
    Case(
        "silence with MD5 on eBGP at TTL 1: MD5, TTL and filters, in that order",
        "",
        (),
        FailureCause.TIMEOUT,
        ("no answer from 10.0.0.1:179", "TCP MD5", "ebgpMultiHop", "firewall"),
        md5=True,
    ),
    Case(
        "silence on iBGP without MD5: only filters",
        "",
        (),
        FailureCause.TIMEOUT,
        ("no answer", "firewall"),
        ("MD5", "ebgpMultiHop"),
        peer=IBGP,
    ),
    Case(
        "the kernel's connect timeout is a timeout too",
        CLOSING,
        (TIMED_OUT,),
        FailureCause.TIMEOUT,
        ("no answer", "ebgpMultiHop"),
    ),
    Case(
        "a close with no explanation is unknown, and blames neither MD5 nor TTL",
        CLOSING,
        (CLOSE_NOISE,),
        FailureCause.UNKNOWN,
        ("closing connection", "router's log"),
        ("MD5", "ebgpMultiHop"),
        md5=True,
    ),
    Case("a helper problem is unknown", PROCESS, (), FailureCause.UNKNOWN, ("process problem",)),
    Case(
        "the newest evidence line wins",
        CLOSING,
        (REFUSED, HOST_UNREACHABLE),
        FailureCause.NO_ROUTE,
        ("no route to host",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.desc for case in CASES])
def test_diagnose(case: Case) -> None:
    """The cause is the one the evidence shows, and the hint names what to check for it (and nothing else)."""
    got = diagnose(case.reason, case.lines, peer=case.peer, router_id=ROUTER_ID, md5=case.md5)
    assert got.cause is case.want_cause, got
    for text in case.want_in_hint:
        assert text in got.hint, (text, got.hint)
    for text in case.not_in_hint:
        assert text not in got.hint, (text, got.hint)


def test_diagnose_keeps_the_evidence_it_used() -> None:
    """The log line or reason the diagnosis rests on travels with it (for the log's ``evidence`` key)."""
    assert diagnose(CLOSING, [REFUSED], peer=EBGP, router_id=ROUTER_ID, md5=False).evidence == REFUSED
    assert diagnose(NOTIFY_SENT_BAD_AS, [], peer=EBGP, router_id=ROUTER_ID, md5=False).evidence == NOTIFY_SENT_BAD_AS
    assert diagnose("", [], peer=EBGP, router_id=ROUTER_ID, md5=False).evidence == ""


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (REFUSED, True),
        (HOST_UNREACHABLE, True),
        (NET_UNREACHABLE, True),
        (TIMED_OUT, True),
        (BIND_FAILED, True),
        (LOST, True),
        (CLOSED_BY_REMOTE, True),
        (CLOSE_NOISE, False),
        ("outgoing-1      connection to 10.0.0.1 closed", False),
        ('advice          generate it using "exabgp env > /etc/exabgp/exabgp.env"', False),
    ],
    ids=["refused", "host", "net", "timeout", "bind", "lost", "closed", "close-noise", "closed-noise", "advice"],
)
def test_is_evidence(line: str, want: bool) -> None:
    """Only lines that say why a connect failed are kept; ExaBGP's every-failure close lines are not."""
    assert is_evidence(line) is want


# -- whom ExaBGP runs as ---------------------------------------------------------------


def test_root_runs_exabgp_as_nobody_by_default() -> None:
    """As root, no setting: nobody, with nobody's own uid and gid."""
    import pwd

    entry = pwd.getpwnam("nobody")
    assert resolve_run_as(None, euid=0) == RunAs("nobody", entry.pw_uid, entry.pw_gid)


def test_root_may_name_a_numeric_user_without_a_passwd_entry() -> None:
    """UID:GID (and UID alone, gid = uid) work where /etc/passwd has no entry."""
    assert resolve_run_as("4242421:4242422", euid=0) == RunAs("4242421", 4242421, 4242422)
    assert resolve_run_as("4242421", euid=0) == RunAs("4242421", 4242421, 4242421)


@pytest.mark.parametrize(
    ("run_as", "euid", "message"),
    [
        ("no-such-user-bgpspeaker", 0, "'no-such-user-bgpspeaker': no such user"),
        ("root", 0, "never runs as root"),
        ("0:0", 0, "never runs as root"),
        ("nobody", 4242421, "only root can switch users"),
    ],
    ids=["unknown-user", "root-by-name", "root-by-number", "not-root"],
)
def test_unusable_users_fail_with_the_user_named(run_as: str, euid: int, message: str) -> None:
    """Unknown users, root itself, or a switch without root: ExabgpUnavailable that says which and why."""
    with pytest.raises(ExabgpUnavailable, match=message.replace("(", r"\(")):
        resolve_run_as(run_as, euid=euid)


def test_non_root_runs_exabgp_as_itself_even_without_a_passwd_entry() -> None:
    """Not root: no switch; a uid with no passwd entry is no error (getpwuid's KeyError is handled)."""
    assert resolve_run_as(None, euid=4242421) is None
    assert resolve_run_as("4242421", euid=4242421) is None
    assert resolve_run_as(None, euid=os.geteuid() or 4242421) is None
