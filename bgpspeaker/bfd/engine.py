"""BFD over UDP: sockets, demultiplexing and the timer loop for many sessions.

Single-hop sessions (RFC 5881) listen on port 3784 and multihop ones (RFC 5883) on
4784, one receive socket per local address and port. Every packet goes out with TTL
(hop limit) 255 from a per-session socket bound to a source port in 49152..65535; the
received TTL comes with each datagram (IP_RECVTTL / IPV6_RECVHOPLIMIT) and must be 255
on a single-hop session and at least ``minimum_ttl`` on a multihop one (GTSM).

A received packet is matched by its Your Discriminator, or when that is 0 by (local
address, remote address, hop mode); it must come from the session's remote address.
Discards are counted by reason (``discards``), never logged per packet.

The engine imports nothing of the daemon and does no logging: it reports through the
``emit`` callback (the child process writes those as JSON lines).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import ipaddress
import random
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

from bgpspeaker.bfd.packet import PacketError, State, decode, diag_label, encode
from bgpspeaker.bfd.session import Session, Timers, Transition

__all__ = ["MULTIHOP_PORT", "SINGLE_HOP_PORT", "Engine", "SessionSpec"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SINGLE_HOP_PORT = 3784
MULTIHOP_PORT = 4784
_IP_RECVTTL = 12  # linux/in.h; Python's socket module lacks the name
_TTL = 255
_SOURCE_PORTS = (49152, 65535)
_REBIND_S = 1.0
"""A local address that cannot be bound yet (IPv6 DAD, an address not configured yet)
is tried again this often."""


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSpec:
    """One wanted session, as the daemon describes it."""

    peer: str
    local: IPAddress
    remote: IPAddress
    multihop: bool = False
    interface: str | None = None
    timers: Timers = dataclasses.field(default_factory=Timers)
    passive: bool = False
    minimum_ttl: int = 254
    """Multihop only: packets with a lower TTL are discarded."""

    @property
    def key(self) -> tuple[Any, ...]:
        """What identifies the session: a change of it is a new session."""
        return (self.local, self.remote, self.multihop, self.interface)

    @property
    def port(self) -> int:
        """The destination port of our packets and the port we listen on."""
        return MULTIHOP_PORT if self.multihop else SINGLE_HOP_PORT


@dataclasses.dataclass(slots=True)
class _Live:
    spec: SessionSpec
    session: Session
    sock: socket.socket | None = None
    last_reported: tuple[int, int] = (0, 0)
    remote_state: State = State.DOWN
    """The remote state last reported (a change of it alone is reported too)."""


def _family(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


class Engine:
    """All BFD sessions of one node. Driven by one thread: ``readable`` sockets,
    ``on_readable``, ``run_due`` and ``next_deadline``; ``set_sessions`` between."""

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        *,
        rng: random.Random | None = None,
        ports: tuple[int, int] = (SINGLE_HOP_PORT, MULTIHOP_PORT),
    ) -> None:
        self._emit = emit
        self._rng = rng or random.SystemRandom()
        self._ports = ports
        """(single-hop, multihop) ports; only tests change them."""
        self._live: dict[tuple[Any, ...], _Live] = {}
        self._by_discriminator: dict[int, _Live] = {}
        self._listeners: dict[tuple[IPAddress, int], socket.socket] = {}
        self._unbound: dict[tuple[IPAddress, int], float] = {}
        """Listener addresses not bound yet -> when to try again."""
        self.discards: collections.Counter[str] = collections.Counter()

    # -- the wanted set ------------------------------------------------------------------

    def set_sessions(self, specs: Iterable[SessionSpec], now: float) -> None:
        """Level-triggered: exactly these sessions run. A known session takes new timers
        (a Poll sequence when Up); a new one starts Down; a missing one goes."""
        wanted = {spec.key: spec for spec in specs}
        for key in [key for key in self._live if key not in wanted]:
            self._remove(self._live.pop(key))
        for key, spec in wanted.items():
            live = self._live.get(key)
            if live is None:
                self._add(spec, now)
            elif live.spec != spec:
                if live.spec.peer != spec.peer:
                    self._report_state(live, None, now)
                live.spec = spec
                live.session.retune(spec.timers, passive=spec.passive, now=now)
        self._converge_listeners(now)

    def admin_down(self, now: float) -> None:
        """Every session administratively down (diag 7); packets go out at once."""
        for live in self._live.values():
            for transition in live.session.admin_down(now):
                self._report_state(live, transition, now)
        self.run_due(now)

    def _add(self, spec: SessionSpec, now: float) -> None:
        discriminator = 0
        while discriminator == 0 or discriminator in self._by_discriminator:
            discriminator = self._rng.randrange(1, 1 << 32)
        session = Session(
            my_discriminator=discriminator,
            timers=spec.timers,
            passive=spec.passive,
            now=now,
            draw=self._rng.random,
        )
        live = _Live(spec=spec, session=session)
        self._live[spec.key] = live
        self._by_discriminator[discriminator] = live
        self._report_state(live, None, now)

    def _remove(self, live: _Live) -> None:
        self._by_discriminator.pop(live.session.my_discriminator, None)
        if live.sock is not None:
            live.sock.close()
        self._emit({"event": "removed", "peer": live.spec.peer})

    # -- sockets -------------------------------------------------------------------------

    def _port(self, spec: SessionSpec) -> int:
        return self._ports[1] if spec.multihop else self._ports[0]

    def _converge_listeners(self, now: float) -> None:
        wanted = {(live.spec.local, self._port(live.spec)) for live in self._live.values()}
        for key in [key for key in self._listeners if key not in wanted]:
            self._listeners.pop(key).close()
        for key in [key for key in self._unbound if key not in wanted]:
            del self._unbound[key]
        for key in wanted:
            if key not in self._listeners and key not in self._unbound:
                self._unbound[key] = now
        self._retry_binds(now)

    def _retry_binds(self, now: float) -> None:
        for key, at in list(self._unbound.items()):
            if at > now:
                continue
            local, port = key
            sock = socket.socket(_family(local), socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if local.version == 4:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                sock.bind((str(local), port))
                sock.setblocking(False)
            except OSError as error:
                sock.close()
                if at == now or error.errno != errno.EADDRNOTAVAIL:
                    self._emit({"event": "bind_failed", "address": str(local), "port": port, "error": str(error)})
                self._unbound[key] = now + _REBIND_S
                continue
            del self._unbound[key]
            self._listeners[key] = sock

    def _tx_socket(self, live: _Live) -> socket.socket | None:
        if live.sock is not None:
            return live.sock
        spec = live.spec
        sock = socket.socket(_family(spec.local), socket.SOCK_DGRAM)
        try:
            if spec.local.version == 4:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, _TTL)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, _TTL)
            if spec.interface:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec.interface.encode())
            for _ in range(64):
                try:
                    sock.bind((str(spec.local), self._rng.randint(*_SOURCE_PORTS)))
                    break
                except OSError as error:
                    if error.errno != errno.EADDRINUSE:
                        raise
            else:
                raise OSError(errno.EADDRINUSE, "no free source port in 49152..65535")
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            self.discards["tx_socket_failed"] += 1
            if self.discards["tx_socket_failed"] == 1:
                self._emit({"event": "tx_socket_failed", "peer": spec.peer, "error": str(error)})
            return None
        live.sock = sock
        return sock

    def readable(self) -> list[socket.socket]:
        """The sockets to wait on."""
        return list(self._listeners.values())

    # -- receiving -----------------------------------------------------------------------

    def on_readable(self, sock: socket.socket, now: float) -> None:
        """Read every queued datagram of ``sock``."""
        key = next((k for k, s in self._listeners.items() if s is sock), None)
        if key is None:
            return
        local, port = key
        multihop = port == self._ports[1]
        space = socket.CMSG_SPACE(4)
        for _ in range(256):
            try:
                data, ancillary, _flags, source = sock.recvmsg(512, space)
            except BlockingIOError:
                return
            except OSError:
                self.discards["recv_error"] += 1
                return
            self._datagram(data, ancillary, source, local=local, multihop=multihop, now=now)

    def _datagram(
        self,
        data: bytes,
        ancillary: list[tuple[int, int, bytes]],
        source: Any,
        *,
        local: IPAddress,
        multihop: bool,
        now: float,
    ) -> None:
        try:
            packet = decode(data)
        except PacketError:
            self.discards["malformed"] += 1
            return
        remote = ipaddress.ip_address(source[0].split("%", 1)[0])
        ttl = _received_ttl(ancillary)
        if packet.your_discriminator:
            live = self._by_discriminator.get(packet.your_discriminator)
            if live is None:
                self.discards["unknown_discriminator"] += 1
                return
        else:
            found = self._live.get((local, remote, multihop, None))
            live = found or next(
                (
                    candidate
                    for candidate in self._live.values()
                    if candidate.spec.local == local
                    and candidate.spec.remote == remote
                    and candidate.spec.multihop == multihop
                ),
                None,
            )
            if live is None:
                self.discards["no_session"] += 1
                return
        spec = live.spec
        if spec.remote != remote or spec.multihop != multihop:
            self.discards["wrong_source"] += 1
            return
        if ttl is None or ttl < (spec.minimum_ttl if multihop else _TTL):
            self.discards["ttl"] += 1
            return
        transitions = live.session.receive(packet, now)
        for transition in transitions:
            self._report_state(live, transition, now)
        if not transitions and live.session.remote_state != live.remote_state:
            self._report_state(live, None, now)
        self._send(live, now)  # a Final answers a Poll at once

    # -- timers --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time something must happen (monotonic), or None."""
        deadlines = [d for live in self._live.values() if (d := live.session.next_deadline()) is not None]
        if self._unbound:
            deadlines.append(min(self._unbound.values()))
        return min(deadlines) if deadlines else None

    def run_due(self, now: float) -> None:
        """Detection timeouts and packets due at ``now``."""
        if self._unbound:
            self._retry_binds(now)
        for live in list(self._live.values()):
            for transition in live.session.expire(now):
                self._report_state(live, transition, now)
            self._send(live, now)
            self._report_timers(live, now)

    def _send(self, live: _Live, now: float) -> None:
        packet = live.session.outgoing(now)
        if packet is None:
            return
        sock = self._tx_socket(live)
        if sock is None:
            return
        try:
            sock.sendto(encode(packet), (str(live.spec.remote), self._port(live.spec)))
        except OSError:
            self.discards["send_error"] += 1

    # -- reports -------------------------------------------------------------------------

    def _report_state(self, live: _Live, transition: Transition | None, now: float) -> None:
        view = live.session.view()
        live.last_reported = (view.tx_interval_us, view.detect_time_us)
        live.remote_state = view.remote_state
        event: dict[str, Any] = {
            "event": "state",
            "peer": live.spec.peer,
            "state": view.state.label,
            "remote_state": view.remote_state.label,
            "diag": diag_label(view.diag),
            "remote_diag": diag_label(view.remote_diag),
            "remote_discriminator": view.remote_discriminator,
            "tx_ms": view.tx_interval_us / 1000,
            "detect_ms": view.detect_time_us / 1000,
            "monotonic": now,
        }
        if transition is not None:
            event["old"] = transition.old.label
            if transition.remote_restarted:
                event["remote_restarted"] = True
        self._emit(event)

    def _report_timers(self, live: _Live, now: float) -> None:
        view = live.session.view()
        if (view.tx_interval_us, view.detect_time_us) != live.last_reported and view.state == State.UP:
            live.last_reported = (view.tx_interval_us, view.detect_time_us)
            self._emit(
                {
                    "event": "timers",
                    "peer": live.spec.peer,
                    "tx_ms": view.tx_interval_us / 1000,
                    "detect_ms": view.detect_time_us / 1000,
                    "monotonic": now,
                }
            )

    def statuses(self) -> list[dict[str, Any]]:
        """Every session's view, for a status request."""
        return [
            {"peer": live.spec.peer, "state": live.session.state.label, "polling": live.session.polling}
            for live in self._live.values()
        ]


def _received_ttl(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if len(data) < 4:
            continue
        if (level == socket.IPPROTO_IP and kind == socket.IP_TTL) or (
            level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT
        ):
            return int(struct.unpack("=i", data[:4])[0])
    return None
