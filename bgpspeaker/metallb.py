"""``bgpspeaker import-metallb``: MetalLB's BGP objects as one SpeakerConfig (pure).

Reads metallb.io/v1beta1 IPAddressPool, BGPAdvertisement, Community and BFDProfile,
and BGPPeer in v1beta2 and v1beta1, from YAML documents (several per file, or a
``kind: List``), and builds the SpeakerConfig with the same meaning as MetalLB gives
them (its API types and documentation, read field by field):

- IPAddressPool -> ``addressPools`` (issue 14's shape), and the pools' addresses as
  ``allowedVIPRanges``: MetalLB never announces an address outside its pools.
- BGPPeer -> ``peers``: ``myASN`` per peer (the most common one goes top-level), hold and
  keepalive both written out (MetalLB derives the missing one: keepalive = hold/3, hold =
  3 x keepalive), ``ebgpMultiHop: true`` -> 255 (FRR's ``ebgp-multihop`` without a TTL),
  ``passwordSecret`` -> the same Secret's ``password`` key (MetalLB's basic-auth Secret),
  ``password`` in clear -> a Secret reference the operator creates (never echoed),
  ``routerID`` -> a nodeOverride for that peer on every node, ``enableGracefulRestart`` ->
  ``gracefulRestart: 120s`` (FRR's default restart time), ``dualStackAddressFamily`` ->
  both families, ``bfdProfile`` kept (issue 13's ``peers[].bfdProfile``), ``dynamicASN``
  and ``connectTime`` kept (at least 1s; bgpspeaker.peeroptions).
- BGPAdvertisement -> ``advertisements``: peers, nodeSelectors, serviceSelectors,
  aggregation lengths, communities (Community aliases resolved to their values),
  ``localPref`` (iBGP only in MetalLB as here: an advertisement that reaches both kinds is
  split in two, the eBGP half without it), ``ipAddressPools``/``ipAddressPoolSelectors``
  -> ``addressPools`` (selectors resolved against the pools' labels now; none selected
  means every pool, as in MetalLB). No BGPAdvertisement at all: MetalLB announces
  nothing over BGP, so neither does the result (an advertisement that selects no Service).
- BFDProfile -> ``bfdProfiles`` (intervals in milliseconds).

Everything else (L2Advertisement, VRFs, interface-only unnumbered peers, ...) is
one warning line each. A document that is not a MetalLB object is a warning too; input
that cannot be read (not UTF-8, not YAML, a value of the wrong type) is a ConfigError.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import yaml

from bgpspeaker.config import _BoundedLoader  # the config's own hardened YAML loader
from bgpspeaker.errors import ConfigError
from bgpspeaker.values import show

__all__ = ["MAX_INPUT_BYTES", "Conversion", "convert", "read_documents"]

MAX_INPUT_BYTES = 16 << 20
"""``kubectl get -o yaml`` of every MetalLB object of a big cluster is well under this."""
GROUP = "metallb.io"
PASSWORD_SECRET = "metallb-import-passwords"
"""The Secret the converted config expects clear-text BGPPeer passwords in (one key per peer)."""
PASSWORD_NAMESPACE = "bgpspeaker-system"
METALLB_NAMESPACE = "metallb-system"
GRACEFUL_RESTART = "120s"
NO_ADVERTISEMENT_LABEL = "bgpspeaker.io/imported-from-metallb-without-bgpadvertisement"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0, "us": 0.001, "µs": 0.001, "ns": 0.000001}
_COMMUNITY = re.compile(r"^(\d+:\d+|large:\d+:\d+:\d+)$")

_KINDS = {
    ("v1beta1", "IPAddressPool"),
    ("v1beta1", "BGPAdvertisement"),
    ("v1beta1", "Community"),
    ("v1beta1", "BFDProfile"),
    ("v1beta1", "BGPPeer"),
    ("v1beta2", "BGPPeer"),
}
_NOT_CARRIED = {
    "L2Advertisement": "L2 mode: bgpspeaker announces over BGP only",
    "ServiceL2Status": "status object, written by MetalLB",
    "ServiceBGPStatus": "status object, written by MetalLB",
    "ConfigurationState": "status object, written by MetalLB",
}
_PEER_FIELDS = {
    "myASN", "peerASN", "peerAddress", "sourceAddress", "peerPort", "holdTime", "keepaliveTime", "routerID",
    "nodeSelectors", "password", "passwordSecret", "bfdProfile", "ebgpMultiHop", "enableGracefulRestart",
    "dualStackAddressFamily", "disableMP", "localASN", "dynamicASN", "interface", "connectTime", "vrf",
}  # fmt: skip
_ADVERTISEMENT_FIELDS = {
    "aggregationLength", "aggregationLengthV6", "localPref", "communities", "ipAddressPools",
    "ipAddressPoolSelectors", "nodeSelectors", "peers", "serviceSelectors",
}  # fmt: skip
_POOL_FIELDS = {"addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation"}
_BFD_FIELDS = {
    "receiveInterval", "transmitInterval", "detectMultiplier", "echoInterval", "echoMode", "passiveMode", "minimumTtl",
}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Conversion:
    """The SpeakerConfig (as a YAML-ready mapping) and one line per thing it could not carry."""

    config: dict[str, Any]
    warnings: tuple[str, ...]


def read_documents(data: bytes, source: str) -> list[tuple[str, Any]]:
    """(where, object) for every object in a YAML stream (``kind: List`` unpacked); ConfigError
    when the bytes are not UTF-8 YAML."""
    if len(data) > MAX_INPUT_BYTES:
        raise ConfigError([f"{source}: {len(data)} bytes, more than {MAX_INPUT_BYTES} (split the file)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError([f"{source}: not UTF-8: byte 0x{data[error.start]:02x} at line {line}"]) from None
    try:
        documents = list(yaml.load_all(text, Loader=_BoundedLoader))  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: not valid YAML: {error}".replace("\n", " ")[:1000]]) from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as error:
        raise ConfigError([f"{source}: cannot be read as YAML: {type(error).__name__}"]) from None
    objects: list[tuple[str, Any]] = []
    for index, document in enumerate(documents):
        where = f"{source}: document {index + 1}"
        if document is None:
            continue
        if isinstance(document, Mapping) and document.get("kind") == "List" and isinstance(document.get("items"), list):
            objects.extend((f"{where} items[{i}]", item) for i, item in enumerate(document["items"]))
        else:
            objects.append((where, document))
    return objects


class _Problems:
    """Warnings (carried on) and errors (the input cannot be converted)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.errors: list[str] = []


def _identify(where: str, obj: Any, problems: _Problems) -> tuple[str, str, Mapping[str, Any]] | None:
    """(kind, name, spec) of a MetalLB object we convert; None (with a warning) otherwise."""
    if not isinstance(obj, Mapping):
        problems.errors.append(f"{where}: must be a Kubernetes object (a mapping), got {show(obj)}")
        return None
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(api_version, str) or not isinstance(kind, str):
        problems.errors.append(f"{where}: apiVersion and kind: required strings, got {show(api_version)}, {show(kind)}")
        return None
    group, _, version = api_version.rpartition("/")
    label = f"{kind} {name}" if isinstance(name, str) else f"{where} {kind}"
    if group != GROUP:
        problems.warnings.append(f"{label} ({api_version}): not a MetalLB object, skipped")
        return None
    if kind in _NOT_CARRIED:
        problems.warnings.append(f"{label}: not converted ({_NOT_CARRIED[kind]})")
        return None
    if (version, kind) not in _KINDS:
        problems.warnings.append(f"{label} ({api_version}): not a kind or version this converter reads, skipped")
        return None
    if not isinstance(name, str) or not name:
        problems.errors.append(f"{where} {kind}: metadata.name: required")
        return None
    spec = obj.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        problems.errors.append(f"{kind} {name}: spec: must be a mapping, got {show(spec)}")
        return None
    return kind, name, spec


def _go_duration_ms(value: Any, path: str, problems: _Problems) -> float | None:
    if isinstance(value, str) and value and _GO_DURATION.match(value):
        return sum(float(number) * _UNIT_MS[unit] for number, unit in _GO_PART.findall(value))
    if value in ("0", 0):
        return 0.0
    problems.errors.append(f"{path}: must be a duration like 90s or 1m30s, got {show(value)}")
    return None


def _seconds(ms: float, path: str, problems: _Problems) -> str:
    whole = int(ms // 1000)
    if whole * 1000 != ms:
        problems.warnings.append(f"{path}: {ms:g} ms rounded down to {whole}s (BGP timers are whole seconds)")
    return f"{whole}s"


def _uint(value: Any, path: str, problems: _Problems, *, high: int = 4294967295) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        problems.errors.append(f"{path}: must be an integer 0..{high}, got {show(value)}")
        return None
    return value


def _strings(value: Any, path: str, problems: _Problems) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.errors.append(f"{path}: must be a list of strings, got {show(value)}")
        return []
    return list(value)


def _selectors(value: Any, path: str, problems: _Problems) -> list[Any]:
    """Label selectors as written (bgpspeaker's config checks them the same way Kubernetes does)."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.errors.append(f"{path}: must be a list of label selectors, got {show(value)}")
        return []
    return [dict(item) if isinstance(item, Mapping) else item for item in value]


def _peer_name(name: str, taken: set[str], problems: _Problems, kind: str) -> str:
    """A DNS label for bgpspeaker (MetalLB names may be DNS subdomains)."""
    candidate = name if _NAME.match(name) else re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    candidate = candidate or "peer"
    base, number = candidate, 2
    while candidate in taken:
        candidate = f"{base[:59]}-{number}"
        number += 1
    if candidate != name:
        problems.warnings.append(f"{kind} {name}: renamed {candidate!r} (bgpspeaker names are DNS labels)")
    taken.add(candidate)
    return candidate


@dataclasses.dataclass
class _Peer:
    name: str
    my_asn: int
    peer_asn: int
    config: dict[str, Any]


def _convert_peer(name: str, spec: Mapping[str, Any], namespace: str, problems: _Problems) -> _Peer | None:
    label = f"BGPPeer {name}"
    for key in sorted(set(spec) - _PEER_FIELDS):
        problems.warnings.append(f"{label}: spec.{key}: unknown to this converter, not carried")
    for key, why in (
        ("localASN", "local-as is not supported; the session uses myASN"),
        ("vrf", "bgpspeaker peers in the node's default VRF"),
    ):
        if spec.get(key):
            problems.warnings.append(f"{label}: spec.{key}: not carried ({why})")
    if spec.get("disableMP"):
        problems.warnings.append(f"{label}: spec.disableMP: not carried (deprecated; each session carries its family)")
    if spec.get("interface"):
        problems.warnings.append(
            f"{label}: spec.interface (unnumbered BGP): not supported by bgpspeaker without the router's link-local"
            " address (peerAddress fe80::... plus interface); this peer is not converted"
        )
        return None
    my_asn = _uint(spec.get("myASN"), f"{label}: spec.myASN", problems)
    dynamic = spec.get("dynamicASN")
    if dynamic in ("internal", "external"):
        peer_asn: int | None = (my_asn or 0) if dynamic == "internal" else 0  # 0: any AS but ours
    else:
        peer_asn = _uint(spec.get("peerASN"), f"{label}: spec.peerASN", problems)
    address = spec.get("peerAddress")
    if not isinstance(address, str) or not address:
        problems.errors.append(f"{label}: spec.peerAddress: required, an IP address, got {show(address)}")
        return None
    if my_asn is None or peer_asn is None:
        return None
    out: dict[str, Any] = {"name": name, "peerAddress": address}
    out.update({"dynamicASN": dynamic} if dynamic in ("internal", "external") else {"peerASN": peer_asn})
    if spec.get("peerPort"):
        out["peerPort"] = _uint(spec["peerPort"], f"{label}: spec.peerPort", problems, high=65535)
    if spec.get("sourceAddress"):
        out["sourceAddress"] = spec["sourceAddress"]
    hold = _go_duration_ms(spec["holdTime"], f"{label}: spec.holdTime", problems) if spec.get("holdTime") else None
    keepalive = (
        _go_duration_ms(spec["keepaliveTime"], f"{label}: spec.keepaliveTime", problems)
        if spec.get("keepaliveTime")
        else None
    )
    if hold is not None or keepalive is not None:
        hold = hold if hold is not None else 3 * (keepalive or 0)
        keepalive = keepalive if keepalive is not None else hold / 3
        out["holdTime"] = _seconds(hold, f"{label}: spec.holdTime", problems)
        out["keepaliveTime"] = _seconds(keepalive, f"{label}: spec.keepaliveTime", problems)
    if spec.get("connectTime"):
        connect = _go_duration_ms(spec["connectTime"], f"{label}: spec.connectTime", problems)
        if connect is not None:
            out["connectTime"] = _seconds(max(connect, 1000.0), f"{label}: spec.connectTime", problems)
    if spec.get("ebgpMultiHop"):
        if my_asn == peer_asn:
            problems.warnings.append(f"{label}: spec.ebgpMultiHop: not carried (an iBGP session; MetalLB refuses it)")
        else:
            out["ebgpMultiHop"] = 255
    if spec.get("enableGracefulRestart"):
        out["gracefulRestart"] = GRACEFUL_RESTART
    if spec.get("dualStackAddressFamily"):
        out["families"] = ["ipv4", "ipv6"]
    secret = spec.get("passwordSecret")
    if isinstance(secret, Mapping) and secret.get("name"):
        out["passwordSecret"] = {
            "name": secret["name"],
            "namespace": secret.get("namespace") or namespace,
            "key": "password",
        }
        problems.warnings.append(
            f"{label}: passwordSecret {out['passwordSecret']['namespace']}/{secret['name']} (key 'password'):"
            " grant the speaker get/list/watch on it (or copy it to the speaker's namespace and edit the reference)"
        )
    elif spec.get("password"):
        # The key is the peer's bgpspeaker name, filled in (and announced) once it is known.
        out["passwordSecret"] = {"name": PASSWORD_SECRET, "namespace": PASSWORD_NAMESPACE, "key": ""}
    selectors = _selectors(spec.get("nodeSelectors"), f"{label}: spec.nodeSelectors", problems)
    if selectors:
        out["nodeSelectors"] = selectors
    if spec.get("bfdProfile"):
        out["bfdProfile"] = spec["bfdProfile"]
    return _Peer(name=name, my_asn=my_asn, peer_asn=peer_asn, config=out)


def _range_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    try:
        if "-" in text:
            first, last = (ipaddress.ip_address(part.strip()) for part in text.split("-", 1))
            if first.version != last.version or int(last) < int(first):
                return None
            return list(ipaddress.summarize_address_range(first, last))
        return [ipaddress.ip_network(text.strip(), strict=False)]
    except ValueError:
        return None


def _convert_pool(
    name: str, spec: Mapping[str, Any], problems: _Problems
) -> tuple[dict[str, Any], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    label = f"IPAddressPool {name}"
    for key in sorted(set(spec) - _POOL_FIELDS):
        problems.warnings.append(f"{label}: spec.{key}: unknown to this converter, not carried")
    addresses = _strings(spec.get("addresses"), f"{label}: spec.addresses", problems)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for text in addresses:
        found = _range_networks(text)
        if found is None:
            problems.errors.append(f"{label}: spec.addresses: {text!r} is neither a CIDR nor FIRST-LAST")
        else:
            networks.extend(found)
    out: dict[str, Any] = {"name": name, "addresses": addresses}
    if spec.get("autoAssign") is not None:
        out["autoAssign"] = bool(spec["autoAssign"])
    if spec.get("avoidBuggyIPs"):
        out["avoidBuggyIPs"] = True
    allocation = spec.get("serviceAllocation")
    if isinstance(allocation, Mapping):
        if allocation.get("serviceSelectors"):
            out["serviceSelectors"] = _selectors(allocation["serviceSelectors"], f"{label}: serviceSelectors", problems)
        if allocation.get("namespaces"):
            out["namespaces"] = _strings(allocation["namespaces"], f"{label}: namespaces", problems)
        for key, why in (
            ("priority", "pools are tried in the order listed"),
            ("namespaceSelectors", "list the namespaces by name in namespaces"),
        ):
            if allocation.get(key):
                problems.warnings.append(f"{label}: spec.serviceAllocation.{key}: not carried ({why})")
    return out, networks


def _convert_bfd(name: str, spec: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    label = f"BFDProfile {name}"
    for key in sorted(set(spec) - _BFD_FIELDS):
        problems.warnings.append(f"{label}: spec.{key}: unknown to this converter, not carried")
    out: dict[str, Any] = {"name": name}
    for key in ("receiveInterval", "transmitInterval"):
        if spec.get(key) is not None:
            value = _uint(spec[key], f"{label}: spec.{key}", problems)
            out[key] = f"{value}ms"
    for key, out_key in (("detectMultiplier", "detectMultiplier"), ("minimumTtl", "minimumTtl")):
        if spec.get(key) is not None:
            out[out_key] = _uint(spec[key], f"{label}: spec.{key}", problems)
    if spec.get("passiveMode") is not None:
        out["passiveMode"] = bool(spec["passiveMode"])
    for key in ("echoMode", "echoInterval"):
        if spec.get(key):
            problems.warnings.append(f"{label}: spec.{key}: not carried (bgpspeaker's BFD has no echo mode)")
    return out


def _matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """A label selector against a pool's labels (for ipAddressPoolSelectors, resolved now)."""
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels") or {}
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        present = key in labels
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and present and labels.get(key) in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _community(value: str, aliases: Mapping[str, str], label: str, problems: _Problems) -> str | None:
    if value in aliases:  # MetalLB looks an alias up first
        return aliases[value]
    if _COMMUNITY.match(value):
        return value
    problems.warnings.append(f"{label}: community {value!r} is neither a value nor a Community alias; not carried")
    return None


def convert(objects: list[tuple[str, Any]]) -> Conversion:
    """The SpeakerConfig equivalent to these MetalLB objects; ConfigError when they cannot be read."""
    problems = _Problems()
    found: dict[str, list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]] = collections.defaultdict(list)
    for where, obj in objects:
        identified = _identify(where, obj, problems)
        if identified is not None:
            kind, name, spec = identified
            meta = obj.get("metadata") or {}
            found[kind].append((name, spec, meta))
    if problems.errors:
        raise ConfigError(problems.errors)

    aliases: dict[str, str] = {}
    for name, spec, _ in found["Community"]:
        for index, alias in enumerate(spec.get("communities") or []):
            if not isinstance(alias, Mapping) or not isinstance(alias.get("name"), str):
                problems.errors.append(f"Community {name}: spec.communities[{index}]: must have a name and a value")
                continue
            aliases[alias["name"]] = str(alias.get("value", ""))

    pools: list[dict[str, Any]] = []
    pool_labels: dict[str, Mapping[str, str]] = {}
    ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for name, spec, meta in found["IPAddressPool"]:
        pool, networks = _convert_pool(name, spec, problems)
        pools.append(pool)
        ranges.extend(networks)
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        pool_labels[name] = labels if isinstance(labels, Mapping) else {}

    taken: set[str] = set()
    peers: list[_Peer] = []
    names: dict[str, str] = {}
    for name, spec, meta in found["BGPPeer"]:
        namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
        peer = _convert_peer(name, spec, namespace or METALLB_NAMESPACE, problems)
        if peer is not None:
            peer.name = peer.config["name"] = names[name] = _peer_name(name, taken, problems, "BGPPeer")
            if peer.config.get("passwordSecret", {}).get("name") == PASSWORD_SECRET:
                peer.config["passwordSecret"]["key"] = peer.name
                problems.warnings.append(
                    f"BGPPeer {name}: spec.password is in clear text; bgpspeaker reads it from a Secret:"
                    f" kubectl -n {PASSWORD_NAMESPACE} create secret generic {PASSWORD_SECRET}"
                    f" --from-literal={peer.name}=<its password> (one key per such peer)"
                )
            peers.append(peer)
    if problems.errors:
        raise ConfigError(problems.errors)

    config: dict[str, Any] = {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig"}
    if not peers:
        problems.warnings.append("no BGPPeer converted: the config needs at least one peer (add peers)")
        config["myASN"] = 64512
    else:
        my_asn = collections.Counter(peer.my_asn for peer in peers).most_common(1)[0][0]
        config["myASN"] = my_asn
    overrides: list[dict[str, Any]] = []
    for peer, (_, spec, _) in zip(peers, [item for item in found["BGPPeer"] if item[0] in names], strict=True):
        if peer.my_asn != config["myASN"]:
            peer.config["myASN"] = peer.my_asn
        router_id = spec.get("routerID")
        if router_id:
            overrides.append(
                {
                    "name": f"{peer.name[:53]}-router-id",
                    "nodeSelectors": [{}],
                    "peers": [peer.name],
                    "routerID": router_id,
                }
            )
            problems.warnings.append(
                f"BGPPeer {peer.name}: spec.routerID {router_id}: every node uses it on this session, as in MetalLB"
            )
    config["peers"] = [_ordered_peer(peer.config) for peer in peers]
    if pools:
        config["addressPools"] = pools
    if found["BFDProfile"]:
        config["bfdProfiles"] = [_convert_bfd(name, spec, problems) for name, spec, _ in found["BFDProfile"]]

    advertisements: list[dict[str, Any]] = []
    by_name = {peer.name: peer for peer in peers}
    for name, spec, _ in found["BGPAdvertisement"]:
        advertisements.extend(
            _convert_advertisement(
                name,
                spec,
                names=names,
                by_name=by_name,
                aliases=aliases,
                pool_labels=pool_labels,
                taken=taken,
                problems=problems,
            )
        )
    if not found["BGPAdvertisement"]:
        problems.warnings.append(
            "no BGPAdvertisement: MetalLB announces nothing over BGP, and neither does this config"
            " (its one advertisement selects no Service; replace it with yours)"
        )
        advertisements.append(
            {
                "name": "none",
                "serviceSelectors": [{"matchExpressions": [{"key": NO_ADVERTISEMENT_LABEL, "operator": "Exists"}]}],
            }
        )
    config["advertisements"] = advertisements
    if ranges:
        config["allowedVIPRanges"] = [
            str(network)
            for version in (4, 6)
            for network in ipaddress.collapse_addresses([n for n in ranges if n.version == version])  # type: ignore[type-var]  # one version each
        ]
    if overrides:
        config["nodeOverrides"] = overrides
    if problems.errors:
        raise ConfigError(problems.errors)
    return Conversion(config=config, warnings=tuple(problems.warnings))


_PEER_ORDER = (
    "name", "peerAddress", "peerASN", "dynamicASN", "myASN", "peerPort", "sourceAddress", "holdTime", "keepaliveTime",
    "connectTime", "ebgpMultiHop", "gracefulRestart", "families", "passwordSecret", "bfdProfile", "nodeSelectors",
)  # fmt: skip


def _ordered_peer(peer: Mapping[str, Any]) -> dict[str, Any]:
    return {key: peer[key] for key in _PEER_ORDER if key in peer}


def _convert_advertisement(
    name: str,
    spec: Mapping[str, Any],
    *,
    names: Mapping[str, str],
    by_name: Mapping[str, _Peer],
    aliases: Mapping[str, str],
    pool_labels: Mapping[str, Mapping[str, str]],
    taken: set[str],
    problems: _Problems,
) -> list[dict[str, Any]]:
    label = f"BGPAdvertisement {name}"
    for key in sorted(set(spec) - _ADVERTISEMENT_FIELDS):
        problems.warnings.append(f"{label}: spec.{key}: unknown to this converter, not carried")
    out: dict[str, Any] = {"name": _peer_name(name, taken, problems, "BGPAdvertisement")}
    listed = _strings(spec.get("peers"), f"{label}: spec.peers", problems)
    peer_names = []
    for peer in listed:
        if peer in names:
            peer_names.append(names[peer])
        else:
            problems.warnings.append(f"{label}: spec.peers: no BGPPeer {peer!r} converted; dropped")
    if listed and not peer_names:
        problems.warnings.append(f"{label}: none of its peers was converted: it announces nothing; not carried")
        return []
    pools = _strings(spec.get("ipAddressPools"), f"{label}: spec.ipAddressPools", problems)
    for pool in pools:
        if pool not in pool_labels:
            problems.warnings.append(f"{label}: spec.ipAddressPools: no IPAddressPool {pool!r} in the input")
    pool_selectors = _selectors(spec.get("ipAddressPoolSelectors"), f"{label}: ipAddressPoolSelectors", problems)
    if pool_selectors:
        chosen = [p for p, labels in pool_labels.items() if any(_matches(s, labels) for s in pool_selectors)]
        pools += [p for p in chosen if p not in pools]
        problems.warnings.append(
            f"{label}: spec.ipAddressPoolSelectors resolved to the pools labelled so now"
            f" ({', '.join(chosen) or 'none'});"
            " a pool labelled later is not followed: list it in addressPools"
        )
    if pools:
        out["addressPools"] = pools
    for key in ("serviceSelectors", "nodeSelectors"):
        selectors = _selectors(spec.get(key), f"{label}: spec.{key}", problems)
        if selectors:
            out[key] = selectors
    for key, default in (("aggregationLength", 32), ("aggregationLengthV6", 128)):
        if spec.get(key) is not None and spec[key] != default:
            out[key] = _uint(spec[key], f"{label}: spec.{key}", problems, high=default)
    communities: list[str] = []
    for value in _strings(spec.get("communities"), f"{label}: spec.communities", problems):
        community = _community(value, aliases, label, problems)
        if community is not None and community not in communities:
            communities.append(community)
    if communities:
        out["communities"] = communities
    local_pref = _uint(spec.get("localPref") or 0, f"{label}: spec.localPref", problems)
    if not local_pref:
        return [_with_peers(out, peer_names)]
    targets = peer_names or list(by_name)
    ibgp = [p for p in targets if by_name[p].my_asn == by_name[p].peer_asn]
    ebgp = [p for p in targets if p not in ibgp]
    if not ebgp:
        return [_with_peers({**out, "localPref": local_pref}, peer_names)]
    problems.warnings.append(
        f"{label}: localPref {local_pref} goes to iBGP peers only (as MetalLB sends it): split into"
        f" {out['name']} (eBGP: {', '.join(ebgp)}) and {out['name']}-ibgp"
        + (f" ({', '.join(ibgp)})" if ibgp else " (no iBGP peer: dropped)")
    )
    split = [_with_peers(out, ebgp)]
    if ibgp:
        split.append(_with_peers({**out, "name": f"{out['name'][:58]}-ibgp", "localPref": local_pref}, ibgp))
    return split


def _with_peers(advertisement: dict[str, Any], peers: list[str]) -> dict[str, Any]:
    """The advertisement with its ``peers`` (none: every peer) in the config's usual order."""
    ordered: dict[str, Any] = {"name": advertisement["name"]}
    if peers:
        ordered["peers"] = peers
    ordered.update({key: value for key, value in advertisement.items() if key != "name"})
    return ordered
