"""Per-node settings: which peers this node runs, and with which routerID, myASN and
sourceAddress (pure: values in, values out).

Two mechanisms, both selected by the Node's labels, as MetalLB's BGPPeer does with its
``nodeSelectors`` and ``myASN``:

- **Peers with nodeSelectors.** A peer runs only on the nodes its selectors select, and
  carries its own ``myASN``. One router reached with two ASNs by node group is two peers
  with the same ``peerAddress`` and node selectors that never select the same node
  (MetalLB: two BGPPeers). Allowed at load when every peer sharing the address has
  ``nodeSelectors`` and no two of them have an identical selector (those always overlap);
  other overlaps depend on labels, so they are checked on every pass: a node selected by
  two peers of one address runs **neither** (which ASN would be right is unknowable), logs
  ``peer_address_conflict`` once, and runs the right one again when its labels change.
- **nodeOverrides.** A list of ``{name, nodeSelectors, peers?, routerID?, myASN?,
  sourceAddress?}``: on the nodes an override selects, its values replace the top-level
  ``routerID`` and the ``myASN``/``sourceAddress`` of the peers it names (all peers when
  ``peers`` is empty). Overrides win over both top-level and per-peer values (they are the
  most specific). Two overrides that select one node and set the same field of one peer to
  different values make that peer ambiguous: it is not run from that node
  (``node_override_conflict``), like duplicate peers. An override's ``myASN`` must keep each
  of its peers eBGP or iBGP as it is (checked at load), so that what the config checks for
  one kind of session (localPref, asPathPrepend, ebgpMultiHop) stays true on every node.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bgpspeaker.routes import IPAddress
from bgpspeaker.values import (
    LabelSelector,
    matches_any,
    parse_asn,
    parse_names,
    parse_router_id,
    parse_selectors,
    parse_unicast,
    show,
)

if TYPE_CHECKING:
    from bgpspeaker.config import PeerConfig, SpeakerConfig
    from bgpspeaker.peers import PeerRuntime

__all__ = [
    "NODE_OVERRIDE_KEYS",
    "NodeOverride",
    "NodePeer",
    "NodePeers",
    "PeerProblem",
    "check_duplicate_addresses",
    "node_runtime",
    "parse_node_overrides",
    "peers_for_node",
    "unconditional_peers",
]

NODE_OVERRIDE_KEYS = frozenset({"name", "nodeSelectors", "peers", "routerID", "myASN", "sourceAddress"})
_FIELDS = ("router_id", "my_asn", "source_address")


@dataclasses.dataclass(frozen=True, slots=True)
class NodeOverride:
    """Values for the nodes ``node_selectors`` select (None: not overridden)."""

    name: str
    node_selectors: tuple[LabelSelector, ...]
    peers: tuple[str, ...] = ()
    """Peer names; empty: every peer."""
    router_id: ipaddress.IPv4Address | None = None
    my_asn: int | None = None
    source_address: IPAddress | None = None

    def applies_to(self, peer: str) -> bool:
        """Whether this override concerns ``peer`` (on the nodes it selects)."""
        return not self.peers or peer in self.peers


@dataclasses.dataclass(frozen=True, slots=True)
class NodePeer:
    """One peer as this node runs it."""

    peer: PeerConfig
    """With this node's ``my_asn`` and ``source_address``."""
    router_id: ipaddress.IPv4Address | None = None
    """This node's override, or None: the speaker's router ID."""
    my_asn: int | None = None
    """This node's override (already in ``peer``), or None."""
    source_address: IPAddress | None = None
    """This node's override (already in ``peer``), or None."""
    overrides: tuple[str, ...] = ()
    """Names of the overrides applied."""


@dataclasses.dataclass(frozen=True, slots=True)
class PeerProblem:
    """Why peers that select this node are not run from it."""

    event: str
    """``peer_address_conflict`` or ``node_override_conflict``."""
    peers: tuple[str, ...]
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class NodePeers:
    """The peers one node runs, and the ones it cannot run, with why."""

    peers: Mapping[str, NodePeer]
    problems: tuple[PeerProblem, ...] = ()


def peers_for_node(config: SpeakerConfig, labels: Mapping[str, str]) -> NodePeers:
    """The peers a node with ``labels`` runs, each with the node's settings applied."""
    selected = [peer for peer in config.peers if matches_any(peer.node_selectors, labels)]
    by_address: dict[IPAddress, list[PeerConfig]] = {}
    for peer in selected:
        by_address.setdefault(peer.peer_address, []).append(peer)
    problems: list[PeerProblem] = []
    for address, group in by_address.items():
        if len(group) == 1:
            continue
        names = tuple(peer.name for peer in group)
        problems.append(
            PeerProblem(
                "peer_address_conflict",
                names,
                f"peers {', '.join(names)} all select this node and have peerAddress {address}:"
                " none of them is run from it until its labels select only one",
            )
        )
    runnable = [peer for peer in selected if len(by_address[peer.peer_address]) == 1]
    overrides = [o for o in config.node_overrides if matches_any(o.node_selectors, labels)]
    result: dict[str, NodePeer] = {}
    for peer in runnable:
        mine = [o for o in overrides if o.applies_to(peer.name)]
        values: dict[str, Any] = {}
        conflict = None
        for field in _FIELDS:
            setting = {getattr(o, field) for o in mine if getattr(o, field) is not None}
            if len(setting) > 1:
                setters = [o.name for o in mine if getattr(o, field) is not None]
                conflict = f"overrides {', '.join(setters)} set {field} differently on this node"
                break
            if setting:
                values[field] = next(iter(setting))
        if conflict is not None:
            problems.append(
                PeerProblem("node_override_conflict", (peer.name,), f"{conflict}: peer {peer.name} is not run from it")
            )
            continue
        effective = peer
        if "my_asn" in values or "source_address" in values:
            effective = dataclasses.replace(
                peer,
                my_asn=values.get("my_asn", peer.my_asn),
                source_address=values.get("source_address", peer.source_address),
            )
        result[peer.name] = NodePeer(
            peer=effective,
            router_id=values.get("router_id"),
            my_asn=values.get("my_asn"),
            source_address=values.get("source_address"),
            overrides=tuple(o.name for o in mine),
        )
    return NodePeers(peers=result, problems=tuple(problems))


def node_runtime(runtime: PeerRuntime, chosen: NodePeer, router_id: IPAddress) -> tuple[PeerRuntime, IPAddress]:
    """(``runtime`` with this node's overrides, the router ID its session uses: this node's
    override, else the peer's own ``routerID``, else ``router_id``). An overridden source
    address is also the next hop of the session's own family."""
    router_id = chosen.router_id or runtime.peer.router_id or router_id
    if chosen.my_asn is None and chosen.source_address is None:
        return runtime, router_id
    peer = dataclasses.replace(
        runtime.peer,
        my_asn=chosen.my_asn if chosen.my_asn is not None else runtime.peer.my_asn,
        source_address=chosen.source_address or runtime.peer.source_address,
    )
    next_hops = dict(runtime.next_hops)
    if chosen.source_address is not None:
        next_hops[chosen.source_address.version] = chosen.source_address
    return dataclasses.replace(runtime, peer=peer, next_hops=next_hops), router_id


def unconditional_peers(config: SpeakerConfig) -> set[str]:
    """Peers every node runs as configured, whatever its labels (started before the first
    sync): no nodeSelectors, and no override concerns them."""
    return {
        peer.name
        for peer in config.peers
        if not peer.node_selectors and not any(o.applies_to(peer.name) for o in config.node_overrides)
    }


# -- config parsing (called by bgpspeaker.config) -------------------------------------------


def check_duplicate_addresses(peers: list[tuple[int, PeerConfig]], problems: list[str]) -> None:
    """The same peerAddress in several peers: only with nodeSelectors on each, none identical."""
    by_address: dict[IPAddress, list[tuple[int, PeerConfig]]] = {}
    for index, peer in peers:
        by_address.setdefault(peer.peer_address, []).append((index, peer))
    for address, group in by_address.items():
        if len(group) < 2:
            continue
        first = group[0][0]
        for index, peer in group[1:]:
            if not all(other.node_selectors for _, other in group):
                problems.append(
                    f"peers[{index}].peerAddress: duplicate of peers[{first}], got '{address}'"
                    " (the same router twice needs nodeSelectors on every such peer, selecting different nodes)"
                )
                continue
            for other_index, other in group:
                if other_index < index and set(other.node_selectors) & set(peer.node_selectors):
                    problems.append(
                        f"peers[{index}].nodeSelectors: the same selector as peers[{other_index}],"
                        f" which has the same peerAddress {address}: they would both select the same nodes"
                    )


def parse_node_overrides(
    value: Any, path: str, peers: Mapping[str, PeerConfig], problems: list[str]
) -> tuple[NodeOverride, ...]:
    """``nodeOverrides``: a list of overrides (absent: none)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{path}: must be a list of node overrides, got {show(value)}")
        return ()
    overrides: list[NodeOverride] = []
    names: dict[str, int] = {}
    for index, item in enumerate(value):
        override = _override(item, f"{path}[{index}]", peers, problems)
        if override is None:
            continue
        if override.name in names:
            problems.append(f"{path}[{index}].name: duplicate of {path}[{names[override.name]}], got '{override.name}'")
        names.setdefault(override.name, index)
        overrides.append(override)
    return tuple(overrides)


def _override(data: Any, path: str, peers: Mapping[str, PeerConfig], problems: list[str]) -> NodeOverride | None:
    from bgpspeaker.config import _name, _unknown_keys  # the config's own field checks

    if not isinstance(data, Mapping):
        problems.append(f"{path}: must be a mapping, got {show(data)}")
        return None
    before = len(problems)
    _unknown_keys(data, NODE_OVERRIDE_KEYS, path, problems)
    name = _name(data.get("name"), f"{path}.name", problems)
    selectors = parse_selectors(data.get("nodeSelectors"), f"{path}.nodeSelectors", problems)
    if data.get("nodeSelectors") in (None, []):
        problems.append(
            f"{path}.nodeSelectors: required, a non-empty list of label selectors"
            " (for every node, set the top-level value instead)"
        )
    raw_peers = data.get("peers")
    peer_names = parse_names(raw_peers, f"{path}.peers", peers.keys(), problems, what="peer", listing="peers")
    targets = [peers[n] for n in peer_names] if raw_peers else list(peers.values())

    router_id = parse_router_id(data.get("routerID"), f"{path}.routerID", problems)
    my_asn = parse_asn(data["myASN"], f"{path}.myASN", problems) if data.get("myASN") is not None else None
    if my_asn is not None:
        for peer in targets:
            if peer.ebgp_with(my_asn) != peer.ebgp:
                kind, now = ("iBGP", "eBGP") if peer.ebgp else ("eBGP", "iBGP")
                problems.append(
                    f"{path}.myASN: {my_asn} would make peer {show(peer.name)} {kind} (peerASN {peer.peer_asn});"
                    f" it is {now} with myASN {peer.my_asn}. An override must keep each session eBGP or iBGP"
                    " (list only the peers it fits in peers)"
                )
    source = parse_unicast(data.get("sourceAddress"), f"{path}.sourceAddress", problems)
    if source is not None:
        for peer in targets:
            if peer.peer_address.version != source.version:
                problems.append(
                    f"{path}.sourceAddress: must be the same family as the peerAddress of {show(peer.name)}"
                    f" ({peer.peer_address}), got {show(data['sourceAddress'])} (list only matching peers in peers)"
                )
    if router_id is None and my_asn is None and source is None and len(problems) == before:
        problems.append(f"{path}: sets nothing; give at least one of routerID, myASN, sourceAddress")
    if len(problems) != before or name is None:
        return None
    return NodeOverride(
        name=name,
        node_selectors=selectors,
        peers=tuple(peer_names),
        router_id=router_id,
        my_asn=my_asn,
        source_address=source,
    )
