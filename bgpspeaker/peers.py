"""Peers as they run on this node: passwords read, addresses looked up (the shell's I/O).

``resolve_peers(config, read_secret)`` turns the validated config into what the
sessions need and the decision sees: each peer's source address (the kernel's route
lookup when not configured), its explicit next hops for a family carried across
sessions of the other family (IPv6 routes over an IPv4 session get this node's global
IPv6 on the interface toward the peer, never an IPv4-mapped address), and its TCP MD5
password. A family whose next hop cannot be found is dropped from that peer, with a
problem to log; a password that cannot be read is fatal (ConfigError).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bgpspeaker.cluster.access import Access
from bgpspeaker.config import PeerConfig, SecretRef, SpeakerConfig
from bgpspeaker.errors import ConfigError
from bgpspeaker.netinfo import NetFacts, probe
from bgpspeaker.routes import IPAddress

if TYPE_CHECKING:
    from bgpspeaker.cluster.api import ApiPaths

__all__ = ["MD5_MAX_BYTES", "Password", "PeerRuntime", "resolve_peers"]

API_ACCESS = (
    Access(
        "",
        "secrets",
        frozenset({"get"}),
        "read_secret_with: a peer's passwordSecret (deploy/rbac.yaml grants it by name, in bgpspeaker-system)",
        own_namespace=True,
    ),
)
"""The call in ``read_secret_with``."""

MD5_MAX_BYTES = 80
"""TCP_MD5SIG_MAXKEYLEN."""

SecretReader = Callable[[SecretRef], bytes]


class Password:
    """A TCP MD5 key. Its repr and str never show it, so no log line can."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        """The key itself, for ExaBGP's 0600 config file only."""
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Password) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Password(<redacted>)"

    __str__ = __repr__


_FAMILY_VERSION = {"ipv4": 4, "ipv6": 6}


@dataclasses.dataclass(frozen=True, slots=True)
class PeerRuntime:
    """One peer, resolved: what its ExaBGP child is started with."""

    peer: PeerConfig
    """With ``source_address`` filled in when the lookup found one, and the families
    whose next hop could not be found removed."""
    password: Password | None = None
    next_hops: Mapping[int, IPAddress] = dataclasses.field(default_factory=dict)
    """IP version -> explicit next hop (the session's source address for its own family,
    the looked-up address for the other); a version not listed uses ``next-hop self``."""
    problems: tuple[str, ...] = ()
    """Non-fatal: what was dropped and why (logged by the caller)."""

    @property
    def uses_next_hop_self(self) -> bool:
        """Some family it carries has no explicit next hop (no source address was found):
        ExaBGP fills in ``next-hop self`` from the session's local address, which exists only
        while connected; before that ExaBGP 5.0.15 refuses the route (``Neighbor.ip_self``)."""
        return any(_FAMILY_VERSION[family] not in self.next_hops for family in self.peer.families)


def _read_password_file(path: str, where: str) -> Password:
    try:
        with open(path, "rb") as handle:  # bounded: a path to /dev/zero must not be read for ever
            raw = handle.read(MD5_MAX_BYTES + 3)  # the longest key plus "\r\n", and one byte to tell "too long"
    except OSError as error:
        raise ConfigError([f"{where}.passwordFile: cannot read {path}: {error.strerror or error}"]) from error
    return _password(raw.rstrip(b"\r\n"), f"{where}.passwordFile ({path})")


def _password(value: bytes, where: str) -> Password:
    if not 1 <= len(value) <= MD5_MAX_BYTES:
        raise ConfigError([f"{where}: the password must be 1..{MD5_MAX_BYTES} bytes, got {len(value)} bytes"])
    return Password(value)


def read_secret_with(api: ApiPaths) -> SecretReader:
    """A SecretReader that GETs the Secret from the API server."""
    from bgpspeaker.cluster.api import resource_path

    def read(ref: SecretRef) -> bytes:
        secret = api.call("GET", resource_path("/api/v1", "secrets", namespace=ref.namespace, name=ref.name))
        data = (secret.get("data") if isinstance(secret, dict) else None) or {}
        if ref.key not in data:
            raise KeyError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r} (keys: {sorted(data)})")
        return base64.b64decode(data[ref.key])

    return read


def _resolve_one(facts: NetFacts, peer: PeerConfig, read_secret: SecretReader | None, where: str) -> PeerRuntime:
    password: Password | None = None
    if peer.password_file is not None:
        password = _read_password_file(peer.password_file, where)
    elif peer.password_secret is not None:
        ref = peer.password_secret
        if read_secret is None:
            raise ConfigError([f"{where}.passwordSecret: no API server to read Secret {ref.namespace}/{ref.name}"])
        try:
            value = read_secret(ref)
        except Exception as error:  # ApiException, KeyError, bad base64: all "cannot read it"
            raise ConfigError(
                [f"{where}.passwordSecret: cannot read Secret {ref.namespace}/{ref.name} key {ref.key!r}: {error}"]
            ) from error
        password = _password(value, f"{where}.passwordSecret")

    interface, kernel_source = facts.routes.get(str(peer.peer_address), (None, None))
    source = peer.source_address or kernel_source
    problems: list[str] = []
    if source is None:
        problems.append(f"no route to {peer.peer_address}: ExaBGP picks the source address when it connects")
    next_hops: dict[int, IPAddress] = {}
    families = set(peer.families)
    session_version = peer.peer_address.version
    if "ipv6" in families and (peer.ipv6_next_hop is not None or session_version == 4):
        hop = peer.ipv6_next_hop or facts.global_address(interface, 6)
        if hop is None:
            families.discard("ipv6")
            problems.append(
                "ipv6 dropped: no global IPv6 address on the interface toward the peer to use as next hop"
                " (set ipv6NextHop)"
            )
        else:
            next_hops[6] = hop
    if "ipv4" in families and session_version == 6:
        hop = facts.global_address(interface, 4)
        if hop is None:
            families.discard("ipv4")
            problems.append("ipv4 dropped: no IPv4 address on the interface toward the peer to use as next hop")
        else:
            next_hops[4] = hop
    if source is not None:
        # The session's own family: the address ``next-hop self`` would pick, spelled out,
        # so ExaBGP need not copy each route to fill it in (bgpspeaker.exabgp.launcher).
        next_hops.setdefault(session_version, source)
    effective = dataclasses.replace(peer, source_address=source, families=frozenset(families))
    return PeerRuntime(peer=effective, password=password, next_hops=next_hops, problems=tuple(problems))


def check_password_files(config: SpeakerConfig) -> None:
    """Read every passwordFile (check-config: no API server, no route lookups)."""
    problems: list[str] = []
    for index, peer in enumerate(config.peers):
        if peer.password_file is not None:
            try:
                _read_password_file(peer.password_file, f"peers[{index}]")
            except ConfigError as error:
                problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)


def resolve_peers(
    config: SpeakerConfig, read_secret: SecretReader | None = None
) -> tuple[SpeakerConfig, dict[str, PeerRuntime], NetFacts]:
    """(the config with every peer resolved, runtime per peer name, the network facts used);
    ConfigError if a password fails."""
    runtimes: dict[str, PeerRuntime] = {}
    problems: list[str] = []
    facts = probe([str(peer.peer_address) for peer in config.peers])
    for index, peer in enumerate(config.peers):
        try:
            runtimes[peer.name] = _resolve_one(facts, peer, read_secret, f"peers[{index}]")
        except ConfigError as error:
            problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)
    effective = dataclasses.replace(config, peers=tuple(runtimes[peer.name].peer for peer in config.peers))
    return effective, runtimes, facts
