"""Why a session does not come up: the cause ExaBGP's reports point to, and a hint."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Sequence

from bgpspeaker.config import PeerConfig
from bgpspeaker.routes import IPAddress

__all__ = ["NOTIFICATION_REASON", "Diagnosis", "FailureCause", "asn_mismatch", "diagnose", "is_evidence"]

# -- why a session does not come up ---------------------------------------------------


class FailureCause(enum.StrEnum):
    """What the evidence says kept a session from coming up (the ``cause`` log key)."""

    NOTIFICATION = "notification"
    """A BGP NOTIFICATION, sent or received: the two sides disagree on the session."""
    REFUSED = "refused"
    """The router refused the TCP connection, or accepted it and closed it unspoken."""
    NO_ROUTE = "no_route"
    """This node cannot reach the router: no route, no answer to ARP/ND, ICMP unreachable."""
    TIMEOUT = "timeout"
    """No answer at all: SYNs vanish (filters, MD5 mismatch, TTL)."""
    UNKNOWN = "unknown"
    """ExaBGP gave no reason we recognize."""


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnosis:
    """A cause, what to check, and the ExaBGP text it rests on ('' when it is silence)."""

    cause: FailureCause
    hint: str
    evidence: str = ""


# ExaBGP 5.0.15 (reactor/peer.py, Peer._run): a down event's reason is
# "notification sent (C,S)" / "notification received (C,S)", "closing connection" for
# any network error, or "process problem"; the details go to the log.
NOTIFICATION_REASON = re.compile(r"notification (sent|received) \((\d{1,3}),(\d{1,3})\)")

# RFC 4271 4.5 / 6.x and RFC 4486, in ExaBGP's words (bgp/message/notification.py).
_NOTIFICATION_CODES = {
    1: "Message header error",
    2: "OPEN message error",
    3: "UPDATE message error",
    4: "Hold timer expired",
    5: "State machine error",
    6: "Cease",
}
_NOTIFICATION_SUBCODES = {
    (2, 1): "Unsupported Version Number",
    (2, 2): "Bad Peer AS",
    (2, 3): "Bad BGP Identifier",
    (2, 4): "Unsupported Optional Parameter",
    (2, 5): "Authentication Notification (Deprecated)",
    (2, 6): "Unacceptable Hold Time",
    (2, 7): "Unsupported Capability",
    (6, 1): "Maximum Number of Prefixes Reached",
    (6, 2): "Administrative Shutdown",
    (6, 3): "Peer De-configured",
    (6, 4): "Administrative Reset",
    (6, 5): "Connection Rejected",
    (6, 6): "Other Configuration Change",
    (6, 7): "Connection Collision Resolution",
    (6, 8): "Out of Resources",
}

# Log lines that say what happened to a connect: ExaBGP's own texts (reactor/network/
# connection.py, tcp.py) and the launcher's (bgpspeaker.exabgp.launcher, which logs the
# errno ExaBGP drops, in ExaBGP's errstr format "[Errno ECONNREFUSED] [Errno 111] ...").
_EVIDENCE: tuple[tuple[str, FailureCause], ...] = (
    ("econnrefused", FailureCause.REFUSED),
    ("connection refused", FailureCause.REFUSED),
    ("lost tcp session with peer", FailureCause.REFUSED),
    ("closed by the remote end", FailureCause.REFUSED),
    ("econnreset", FailureCause.REFUSED),
    ("enetunreach", FailureCause.NO_ROUTE),
    ("network is unreachable", FailureCause.NO_ROUTE),
    ("ehostunreach", FailureCause.NO_ROUTE),
    ("no route to host", FailureCause.NO_ROUTE),
    ("could not bind to local ip", FailureCause.NO_ROUTE),
    ("etimedout", FailureCause.TIMEOUT),
    ("connection timed out", FailureCause.TIMEOUT),
)


def _line_cause(line: str) -> FailureCause | None:
    lowered = line.lower()
    return next((cause for needle, cause in _EVIDENCE if needle in lowered), None)


def is_evidence(line: str) -> bool:
    """True for an ExaBGP log line that tells why a connection failed (kept for ``diagnose``)."""
    return _line_cause(line) is not None


def diagnose(reason: str, lines: Sequence[str], *, peer: PeerConfig, router_id: IPAddress, md5: bool) -> Diagnosis:
    """Why ``peer``'s session is not up, from ExaBGP's last ``down`` reason in this outage
    ('' when there was none) and its evidence lines (``is_evidence``, oldest first).

    A NOTIFICATION in the reason wins; then the newest log line with a cause; then
    silence (no reason, no line) is a timeout. Only a timeout blames filters, MD5 or TTL.
    """
    notification = NOTIFICATION_REASON.search(reason)
    if notification is not None:
        direction, code, subcode = notification.group(1), int(notification.group(2)), int(notification.group(3))
        return Diagnosis(
            FailureCause.NOTIFICATION,
            _notification_hint(direction == "received", code, subcode, peer=peer, router_id=router_id),
            reason,
        )
    for line in reversed(lines):
        cause = _line_cause(line)
        if cause is not None:
            return Diagnosis(cause, _network_hint(cause, line, peer=peer, md5=md5), line)
    if not reason:
        return Diagnosis(FailureCause.TIMEOUT, _network_hint(FailureCause.TIMEOUT, "", peer=peer, md5=md5))
    return Diagnosis(
        FailureCause.UNKNOWN,
        f"ExaBGP says only {reason!r}: check the router's log for this neighbor"
        " and that the router is reachable from this node",
        reason,
    )


def asn_mismatch(reason: str, peer: PeerConfig) -> dict[str, object] | None:
    """The keys of a ``peer_asn_mismatch`` log line when ``reason`` is a NOTIFICATION 2/2
    (Bad Peer AS) either way; None otherwise."""
    notification = NOTIFICATION_REASON.search(reason)
    if notification is None or (int(notification.group(2)), int(notification.group(3))) != (2, 2):
        return None
    return {
        "rejected_by": "router" if notification.group(1) == "received" else "speaker",
        "expected": peer.dynamic_asn or peer.peer_asn,
        "my_asn": peer.my_asn,
    }


def _notification_hint(received: bool, code: int, subcode: int, *, peer: PeerConfig, router_id: IPAddress) -> str:
    text = _NOTIFICATION_CODES.get(code, "unknown error")
    if (code, subcode) in _NOTIFICATION_SUBCODES:
        text += f" / {_NOTIFICATION_SUBCODES[code, subcode]}"
    who = "sent by the router" if received else "sent by ExaBGP (it rejected what the router sent)"
    keys = ((code, subcode, received), (code, subcode, None), (code, None, received), (code, None, None))
    advice = next(
        (_NOTIFICATION_ADVICE[key] for key in keys if key in _NOTIFICATION_ADVICE),
        "see the router's log for this neighbor",
    )
    facts = {
        "my_asn": peer.my_asn,
        "peer_asn": peer.peer_asn if peer.dynamic_asn is None else f"(dynamicASN {peer.dynamic_asn})",
        "router_id": router_id,
        "hold_time_s": peer.hold_time_s,
        "families": ", ".join(sorted(peer.families)),
        "address": f"this node's address ({peer.source_address})" if peer.source_address else "this node's address",
    }
    return f"NOTIFICATION {code}/{subcode} ({text}) {who}: {advice.format(**facts)}"


# (code, subcode or None for any, received / sent / None for either) -> advice
_NOTIFICATION_ADVICE: dict[tuple[int, int | None, bool | None], str] = {
    (2, 2, True): "the router expects another AS from this node; we are AS {my_asn} (myASN):"
    " the router's neighbor entry for this node needs remote-as {my_asn}",
    (2, 2, False): "the router's OPEN carries another AS than peerASN {peer_asn}:"
    " check peerASN against the router's own AS",
    (2, 3, True): "the router rejects our router ID {router_id}: it must be unique and non-zero"
    " (an iBGP router rejects its own); set routerID",
    (2, 3, False): "the router's BGP identifier is unusable here (the same as ours, {router_id}, on iBGP?):"
    " give the router or this node (routerID) another one",
    (2, 6, True): "the router refuses holdTime {hold_time_s}s (its minimum hold time is higher):"
    " raise holdTime or lower the router's minimum",
    (2, 6, False): "the router offers a hold time of 1 or 2 s, which BGP forbids: fix the router's timers",
    (2, 5, None): "an authentication failure: check the TCP MD5 password on both sides",
    (2, 1, None): "the two sides do not share a BGP version",
    (2, 4, None): "an OPEN parameter is not supported: compare the capabilities (families {families},"
    " graceful restart) with the router's neighbor config",
    (2, 7, None): "a capability is not supported: compare the families ({families}) and graceful restart"
    " with the router's neighbor config",
    (2, None, None): "the OPEN was rejected: compare myASN {my_asn}, peerASN {peer_asn}, routerID {router_id},"
    " holdTime {hold_time_s}s and families ({families}) with the router's neighbor config",
    (4, None, True): "the router heard nothing from us within the hold time: keepalives are lost"
    " (congested link, filter) or ExaBGP is starved",
    (4, None, False): "we heard nothing from the router within holdTime {hold_time_s}s:"
    " the link drops packets or the router is overloaded",
    (6, 1, None): "the router's maximum-prefix limit for this neighbor was reached: raise it there",
    (6, 2, True): "the router has this neighbor administratively shut down (e.g. FRR 'neighbor ... shutdown')",
    (6, 3, True): "the router removed this neighbor from its config",
    (6, 4, True): "the router reset the session (e.g. 'clear bgp'); it comes back by itself",
    (6, 5, True): "the router rejects the connection: it has no neighbor for {address}, or a connection limit or ACL",
    (6, 6, True): "the router's config for this neighbor changed; it comes back by itself",
    (6, 7, None): "both sides connected at once (collision resolution); transient",
    (6, 8, None): "out of resources",
    (6, None, None): "the session was closed on purpose; see the router's log for this neighbor",
    (1, None, None): "a malformed message: see both sides' logs",
    (3, None, None): "an UPDATE was rejected: see the router's log for the attribute it objects to",
    (5, None, None): "a message arrived in the wrong state: see both sides' logs",
}


def _network_hint(cause: FailureCause, line: str, *, peer: PeerConfig, md5: bool) -> str:
    target = f"{peer.peer_address}:{peer.peer_port}"
    ttl_one = peer.ebgp and not peer.ebgp_multihop
    address = f"this node's address ({peer.source_address})" if peer.source_address else "this node's address"
    lowered = line.lower()
    if cause is FailureCause.REFUSED:
        if "refused" in lowered:
            return (
                f"nothing accepts TCP on {target} (connection refused): the router is down,"
                " BGP does not listen on that address, or peerPort is wrong"
            )
        return (
            "the router accepted TCP and closed it without a NOTIFICATION: it has no neighbor for"
            f" {address}, or that neighbor is shut down there"
        )
    if cause is FailureCause.NO_ROUTE:
        if "bind" in lowered:
            return f"cannot use sourceAddress {peer.source_address}: it is not an address of this node"
        if "network is unreachable" in lowered or "enetunreach" in lowered:
            return f"this node has no route to {peer.peer_address}: check its routing table (and sourceAddress, if set)"
        hint = (
            f"no route to host {peer.peer_address}: nothing answered ARP/ND on the link, or a router on the way"
            " sent ICMP unreachable or time-exceeded; check routing from this node (and sourceAddress, if set)"
        )
        if ttl_one:
            hint += "; eBGP with TTL 1 to a router more than one hop away fails exactly like this: set ebgpMultiHop"
        return hint
    causes = []
    if md5:
        causes.append(
            "TCP MD5 is on: a password that differs from the router's looks exactly like this"
            " (the router drops our SYNs); check both sides"
        )
    if ttl_one:
        causes.append("eBGP with TTL 1: if the router is more than one hop away, set ebgpMultiHop")
    causes.append(f"a firewall or ACL on the way may drop TCP to {target}")
    return f"no answer from {target} (our SYNs go unanswered): " + "; or ".join(causes)
