"""The BFD Control packet: encode/decode round trip and every discard rule of RFC 5880 6.8.6."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgpspeaker.bfd.packet import ControlPacket, Diag, PacketError, State, decode, encode

GOOD = ControlPacket(
    state=State.UP,
    my_discriminator=0x01020304,
    your_discriminator=0x0A0B0C0D,
    diag=Diag.NONE,
    detect_mult=3,
    desired_min_tx_us=300_000,
    required_min_rx_us=300_000,
)


def raw(
    *,
    version: int = 1,
    diag: int = 0,
    state: int = 3,
    flags: int = 0,
    mult: int = 3,
    length: int = 24,
    mine: int = 1,
    yours: int = 2,
    extra: bytes = b"",
) -> bytes:
    """A packet built field by field, so each test breaks exactly one rule."""
    return (
        struct.pack("!BBBBIIIII", (version << 5) | diag, (state << 6) | flags, mult, length, mine, yours, 1, 1, 0)
        + extra
    )


@pytest.mark.parametrize(
    "packet",
    [
        GOOD,
        ControlPacket(state=State.DOWN, my_discriminator=1),
        ControlPacket(state=State.ADMIN_DOWN, my_discriminator=7, diag=Diag.ADMINISTRATIVELY_DOWN),
        ControlPacket(state=State.INIT, my_discriminator=1, your_discriminator=2, poll=True),
        ControlPacket(state=State.UP, my_discriminator=1, your_discriminator=2, final=True, detect_mult=255),
        ControlPacket(state=State.UP, my_discriminator=2**32 - 1, your_discriminator=2, control_plane_independent=True),
    ],
    ids=["up", "down", "admin-down", "poll", "final", "c-bit"],
)
def test_round_trip(packet: ControlPacket) -> None:
    """What encode writes, decode reads back unchanged, in 24 bytes."""
    data = encode(packet)
    assert len(data) == 24
    assert decode(data) == packet


def test_wire_layout() -> None:
    """The fields sit where RFC 5880 section 4.1 puts them (version 1, Up, P bit, lengths)."""
    data = encode(
        ControlPacket(state=State.UP, my_discriminator=1, your_discriminator=2, poll=True, diag=Diag.PATH_DOWN)
    )
    assert data[0] == (1 << 5) | 5
    assert data[1] == (3 << 6) | 0x20
    assert data[2:4] == b"\x03\x18"


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (raw()[:23], "shorter than 24"),
        (raw(version=0), "version 0"),
        (raw(version=2), "version 2"),
        (raw(flags=0x04, length=26, extra=b"\x01\x02"), "authentication"),
        (raw(length=23), "below 24"),
        (raw(length=30), "more than the 24 bytes"),
        (raw(mult=0), "detect multiplier 0"),
        (raw(flags=0x01), "multipoint"),
        (raw(mine=0), "my discriminator 0"),
        (raw(yours=0, state=3), "your discriminator 0 in state up"),
        (raw(yours=0, state=2), "your discriminator 0 in state init"),
        (raw(flags=0x30), "Poll and Final"),
    ],
    ids=[
        "short",
        "version-0",
        "version-2",
        "auth",
        "length-small",
        "length-beyond",
        "mult-0",
        "multipoint",
        "my-discr-0",
        "your-discr-0-up",
        "your-discr-0-init",
        "poll-and-final",
    ],
)
def test_discard_rules(data: bytes, rule: str) -> None:
    """Each rule of 6.8.6 that needs no session discards with its own message."""
    with pytest.raises(PacketError, match=rule):
        decode(data)


@pytest.mark.parametrize("state", [0, 1], ids=["admin-down", "down"])
def test_your_discriminator_zero_is_fine_when_down(state: int) -> None:
    """A remote that does not know us yet (Down or AdminDown) sends Your Discriminator 0."""
    assert decode(raw(yours=0, state=state)).your_discriminator == 0


def test_reserved_diag_is_kept_and_trailing_bytes_are_ignored() -> None:
    """A reserved diag code is no reason to discard; bytes past Length are not read."""
    packet = decode(raw(diag=20, extra=b"\x00" * 8))
    assert packet.diag == 20


def test_encode_refuses_poll_and_final() -> None:
    """A packet with P and F is a bug on our side (6.5)."""
    with pytest.raises(ValueError, match="Poll or Final"):
        encode(ControlPacket(state=State.UP, my_discriminator=1, poll=True, final=True))


@given(st.binary(max_size=64))
def test_decode_raises_only_packet_error(data: bytes) -> None:
    """Any bytes from the network: a packet, or PacketError, nothing else."""
    try:
        packet = decode(data)
    except PacketError:
        return
    assert packet.my_discriminator != 0 and packet.detect_mult != 0


@given(st.binary(min_size=24, max_size=24))
def test_decoded_packets_encode_again(data: bytes) -> None:
    """Whatever decode accepts, encode writes back (a decoded packet is always valid)."""
    try:
        packet = decode(data)
    except PacketError:
        return
    assert decode(encode(packet)) == packet
