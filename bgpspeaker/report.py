"""``bgpspeaker status`` and ``bgpspeaker explain``: the operator's two questions.

``status`` reads the running speaker's ``/status``. ``explain`` lists the service, its
EndpointSlices and the Nodes from the live API server (read-only, raw JSON through the
same parsers as the watchers) and runs ``decision.decide`` -- the daemon's own
function -- once per node.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from bgpspeaker.cluster.access import Access
from bgpspeaker.cluster.model import ObjectInvalid, Snapshot, parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.config import MAX_CONFIG_BYTES, SpeakerConfig
from bgpspeaker.decision import decide
from bgpspeaker.routes import Attributes
from bgpspeaker.weights import describe_weight

__all__ = ["describe_attributes", "explain", "fetch_config", "fetch_status", "format_explain", "format_status"]

API_ACCESS = (
    Access("", "services", frozenset({"get"}), "explain: the service by name"),
    Access("discovery.k8s.io", "endpointslices", frozenset({"list"}), "explain: its EndpointSlices"),
    Access("", "nodes", frozenset({"get", "list"}), "explain: one node (--node) or all"),
)
"""``bgpspeaker explain``'s calls: run in a speaker pod (``kubectl exec``) they use its ServiceAccount."""


def fetch_status(address: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET http://ADDRESS/status; OSError when the speaker does not answer."""
    with urllib.request.urlopen(f"http://{address}/status", timeout=timeout_s) as response:  # our own http URL
        document: dict[str, Any] = json.loads(response.read())
    return document


def fetch_config(address: str, timeout_s: float = 5.0) -> bytes:
    """GET http://ADDRESS/config: the config file the speaker runs with; OSError when it does not answer."""
    with urllib.request.urlopen(f"http://{address}/config", timeout=timeout_s) as response:  # our own http URL
        body: bytes = response.read(MAX_CONFIG_BYTES + 1)
    return body


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def format_status(document: dict[str, Any]) -> str:
    """The /status document as a few aligned tables."""
    api = document["api"]
    api_text = (
        f"API reachable (last sync {api['last_sync_age_s']} s ago)"
        if api["reachable"]
        else f"API UNREACHABLE for {api['outage_s']} s"
    )
    lines = [
        f"node {document['node']}: {'ready' if document['ready'] else 'NOT READY: ' + document['ready_detail']},"
        f" config {'valid' if document['config_valid'] else 'INVALID (running the previous one)'}, {api_text}",
        "",
    ]
    peer_rows = [["PEER", "ADDRESS", "ASN", "STATE", "SINCE", "PREFIXES", "EXABGP PID", "RESTARTS"]]
    for peer in document["peers"]:
        peer_rows.append(
            [
                peer["name"],
                peer["address"],
                str(peer["asn"]),
                peer["state"],
                f"{peer['since_s']}s",
                str(peer["prefixes_sent"]),
                str(peer["exabgp_pid"] or "-"),
                str(peer["exabgp_restarts"]),
            ]
        )
    lines += _table(peer_rows) if len(peer_rows) > 1 else ["no peer sessions on this node"]
    lines.append("")
    lines += _bfd_lines(document.get("bfd") or [])
    prefix_rows = [["PREFIX", "PEERS", "SERVICES"]]
    for item in document["prefixes"]:
        prefix_rows.append([item["prefix"], ",".join(item["peers"]), ",".join(item["services"])])
    lines += _table(prefix_rows) if len(prefix_rows) > 1 else ["no prefixes announced"]
    return "\n".join(lines)


def _bfd_lines(sessions: list[dict[str, Any]]) -> list[str]:
    """The BFD table (nothing when no peer has BFD)."""
    if not sessions:
        return []
    rows = [["BFD PEER", "STATE", "REMOTE", "DIAG", "TX", "DETECT", "DOWNS", "LAST CHANGE"]]
    for item in sessions:
        change = item.get("last_change")
        rows.append(
            [
                item["peer"],
                item["state"] + (" (BGP held down)" if item.get("blocks_bgp") else ""),
                item["remote_state"],
                item["diag"]
                if item["diag"] == item["remote_diag"] or item["remote_diag"] == "none"
                else f"{item['diag']}/remote {item['remote_diag']}",
                f"{item['tx_ms']:g}ms",
                f"{item['detect_ms']:g}ms",
                str(item["down_events"]),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(change)) if change else "-",
            ]
        )
    return [*_table(rows), ""]


def describe_attributes(attributes: Attributes) -> str:
    """``community 64512:100, med 10`` (empty when plain)."""
    words = []
    if attributes.communities:
        words.append(f"community {' '.join(attributes.communities)}")
    if attributes.large_communities:
        words.append(f"large-community {' '.join(attributes.large_communities)}")
    if attributes.med is not None:
        words.append(f"med {attributes.med}")
    if attributes.local_pref is not None:
        words.append(f"local-pref {attributes.local_pref}")
    if attributes.as_path_prepend:
        words.append(f"prepend {attributes.as_path_prepend}")
    if attributes.link_bandwidth is not None:
        words.append(f"ecmp-weight {describe_weight(attributes.link_bandwidth)}")
    return ", ".join(words)


def explain(api: Any, config: SpeakerConfig, namespace: str, name: str, *, node: str | None) -> dict[str, Any]:
    """The decision for one service on every node (or one): LookupError when it does not exist."""
    from kubernetes.client.exceptions import ApiException

    from bgpspeaker.cluster.api import ApiPaths, resource_path

    paths = ApiPaths(api)
    try:
        raw_service = paths.call("GET", resource_path("/api/v1", "services", namespace=namespace, name=name))
    except ApiException as error:
        if error.status == 404:
            raise LookupError(f"service {namespace}/{name} not found") from None
        raise
    service = parse_service(raw_service)
    raw_slices = paths.call(
        "GET",
        resource_path("/apis/discovery.k8s.io/v1", "endpointslices", namespace=namespace),
        query=[("labelSelector", f"kubernetes.io/service-name={name}")],
    )
    slices = {}
    problems = []
    for obj in raw_slices.get("items") or []:
        try:
            parsed = parse_endpoint_slice(obj)
        except ObjectInvalid as error:
            problems.append(f"EndpointSlice {obj.get('metadata', {}).get('name')}: {error}")
            continue
        slices[parsed.key] = parsed
    if node is not None:
        try:
            raw_nodes = [paths.call("GET", resource_path("/api/v1", "nodes", name=node))]
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"node {node} not found") from None
            raise
    else:
        raw_nodes = paths.call("GET", "/api/v1/nodes").get("items") or []
    nodes = {}
    for obj in raw_nodes:
        parsed_node = parse_node(obj)
        nodes[parsed_node.name] = parsed_node
    snapshot = Snapshot(services={service.key: service}, slices_by_service={service.key: slices}, nodes=nodes)
    result: dict[str, Any] = {
        "service": service.key,
        "type": service.type,
        "external_traffic_policy": service.external_traffic_policy,
        "vips": [str(ip) for ip in service.ingress_ips],
        "problems": problems,
        "nodes": {},
    }
    for node_name in sorted(nodes):
        decision = decide(snapshot, config, node_name)
        entries = []
        for verdict in decision.verdicts:
            entry: dict[str, Any] = {
                "ip": str(verdict.ip) if verdict.ip is not None else None,
                "announced": verdict.reason.announces,
                "reason": str(verdict.reason),
            }
            if verdict.detail:
                entry["detail"] = verdict.detail
            if verdict.reason.announces and verdict.ip is not None:
                routes: dict[str, dict[str, str]] = {}
                for prefix, announcement in decision.announcements.items():
                    if verdict.ip in prefix:
                        for peer, attributes in announcement.routes.items():
                            routes.setdefault(str(prefix), {})[peer] = describe_attributes(attributes)
                entry["routes"] = routes
            elif verdict.peers:
                entry["peers"] = list(verdict.peers)
            entries.append(entry)
        result["nodes"][node_name] = entries
    return result


def format_explain(report: dict[str, Any]) -> str:
    """The explain report as text: one block per node."""
    vips = ", ".join(report["vips"]) or "none"
    lines = [
        f"{report['service']}: type {report['type']}, externalTrafficPolicy {report['external_traffic_policy']},"
        f" VIPs {vips}"
    ]
    lines += [f"  problem: {problem}" for problem in report["problems"]]
    for node_name, entries in report["nodes"].items():
        lines.append(f"{node_name}:")
        for entry in entries:
            what = entry["ip"] or "service"
            if entry["announced"]:
                for prefix, peers in entry["routes"].items():
                    targets = "; ".join(f"{peer}{' [' + attrs + ']' if attrs else ''}" for peer, attrs in peers.items())
                    lines.append(f"  {what}: announced as {prefix} to {targets} ({entry['reason']})")
                if "detail" in entry:
                    lines.append(f"    note: {entry['detail']}")
            else:
                detail = f": {entry['detail']}" if "detail" in entry else ""
                lines.append(f"  {what}: not announced, {entry['reason']}{detail}")
    return "\n".join(lines)
