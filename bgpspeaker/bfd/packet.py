"""The BFD Control packet (RFC 5880 section 4.1): encoding, and decoding with the
reception checks of section 6.8.6 that need no session (pure; no I/O).

Authentication is not supported: a packet with the A bit is discarded, as the RFC asks
of a session without authentication. Echo is never requested (Required Min Echo RX 0).
"""

from __future__ import annotations

import dataclasses
import enum
import struct

__all__ = [
    "HEADER_LENGTH",
    "VERSION",
    "ControlPacket",
    "Diag",
    "PacketError",
    "State",
    "decode",
    "diag_label",
    "diag_of",
    "encode",
]

VERSION = 1
HEADER_LENGTH = 24
"""The mandatory section; the whole packet without authentication."""
_HEADER = struct.Struct("!BBBBIIIII")
_U32_MAX = 0xFFFFFFFF


class State(enum.IntEnum):
    """bfd.SessionState and the Sta field."""

    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3

    @property
    def label(self) -> str:
        """Lowercase name for logs and status: ``admin_down``, ``down``, ``init``, ``up``."""
        return self.name.lower()


class Diag(enum.IntEnum):
    """Diagnostic codes (RFC 5880 section 4.1)."""

    NONE = 0
    CONTROL_DETECTION_TIME_EXPIRED = 1
    ECHO_FUNCTION_FAILED = 2
    NEIGHBOR_SIGNALED_SESSION_DOWN = 3
    FORWARDING_PLANE_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMINISTRATIVELY_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8

    @property
    def label(self) -> str:
        """Lowercase name for logs and status (``control_detection_time_expired``)."""
        return self.name.lower()


def diag_of(code: int) -> Diag | int:
    """The ``Diag`` for ``code``, or the code itself when it is reserved."""
    try:
        return Diag(code)
    except ValueError:
        return code


def diag_label(diag: Diag | int) -> str:
    """``control_detection_time_expired``, or ``reserved_12``."""
    return diag.label if isinstance(diag, Diag) else f"reserved_{diag}"


class PacketError(ValueError):
    """A received packet that must be discarded; the message says which rule."""


@dataclasses.dataclass(frozen=True, slots=True)
class ControlPacket:
    """One BFD Control packet without authentication. Intervals in microseconds."""

    state: State
    my_discriminator: int
    your_discriminator: int = 0
    diag: Diag | int = Diag.NONE
    """A ``Diag``, or the bare code of one reserved today (9..31: kept, not discarded)."""
    detect_mult: int = 3
    desired_min_tx_us: int = 1_000_000
    required_min_rx_us: int = 1_000_000
    required_min_echo_rx_us: int = 0
    poll: bool = False
    final: bool = False
    control_plane_independent: bool = False
    demand: bool = False


def encode(packet: ControlPacket) -> bytes:
    """The 24 bytes on the wire. Raises ValueError for a field out of range (a bug)."""
    if packet.poll and packet.final:
        raise ValueError("a packet has Poll or Final, not both (RFC 5880 section 6.5)")
    if not 0 <= packet.diag <= 31:
        raise ValueError(f"diag must be 0..31, got {packet.diag}")
    if not 1 <= packet.detect_mult <= 255:
        raise ValueError(f"detect_mult must be 1..255, got {packet.detect_mult}")
    for name in ("my_discriminator", "your_discriminator", "desired_min_tx_us", "required_min_rx_us"):
        value = getattr(packet, name)
        if not 0 <= value <= _U32_MAX:
            raise ValueError(f"{name} must be 0..2^32-1, got {value}")
    flags = (
        (packet.state << 6)
        | (packet.poll << 5)
        | (packet.final << 4)
        | (packet.control_plane_independent << 3)
        | (packet.demand << 1)
    )
    return _HEADER.pack(
        (VERSION << 5) | packet.diag,
        flags,
        packet.detect_mult,
        HEADER_LENGTH,
        packet.my_discriminator,
        packet.your_discriminator,
        packet.desired_min_tx_us,
        packet.required_min_rx_us,
        packet.required_min_echo_rx_us,
    )


def decode(data: bytes) -> ControlPacket:
    """A received packet, checked by every rule of RFC 5880 section 6.8.6 that needs no
    session. Raises PacketError (and nothing else) for a packet to discard."""
    if len(data) < HEADER_LENGTH:
        raise PacketError(f"shorter than {HEADER_LENGTH} bytes: {len(data)}")
    first, flags, mult, length, mine, yours, tx, rx, echo = _HEADER.unpack_from(data)
    version = first >> 5
    if version != VERSION:
        raise PacketError(f"version {version}, not {VERSION}")
    authenticated = bool(flags & 0x04)
    if authenticated:
        raise PacketError("authentication (A bit) is not in use on this session")
    if length < HEADER_LENGTH:
        raise PacketError(f"length field {length} is below {HEADER_LENGTH}")
    if length > len(data):
        raise PacketError(f"length field {length} is more than the {len(data)} bytes received")
    if mult == 0:
        raise PacketError("detect multiplier 0")
    if flags & 0x01:
        raise PacketError("multipoint (M bit) set")
    if mine == 0:
        raise PacketError("my discriminator 0")
    state = State(flags >> 6)
    if yours == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
        raise PacketError(f"your discriminator 0 in state {state.label}")
    poll, final = bool(flags & 0x20), bool(flags & 0x10)
    if poll and final:
        raise PacketError("Poll and Final both set")
    return ControlPacket(
        state=state,
        my_discriminator=mine,
        your_discriminator=yours,
        diag=diag_of(first & 0x1F),
        detect_mult=mult,
        desired_min_tx_us=tx,
        required_min_rx_us=rx,
        required_min_echo_rx_us=echo,
        poll=poll,
        final=final,
        control_plane_independent=bool(flags & 0x08),
        demand=bool(flags & 0x02),
    )
