"""ExaBGP's configuration for one peer, from the templates in exabgp-conf/ (read once)."""

from __future__ import annotations

import base64
import functools
import re
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import IPAddress

__all__ = ["render_config", "session_fingerprint"]

_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


@functools.cache
def _template(name: str) -> string.Template:
    """A template from ``exabgp-conf/`` (installed as ``bgpspeaker.exabgp_conf``), read once."""
    try:
        text = resources.files("bgpspeaker.exabgp_conf").joinpath(name).read_text()
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source tree
        text = (Path(__file__).resolve().parents[2] / "exabgp-conf" / name).read_text()
    return string.Template(text)


def _safe_path(path: str) -> str:
    if not _SAFE_PATH.match(path):
        raise ValueError(f"path not usable in ExaBGP's config (spaces or odd characters): {path!r}")
    return path


def render_config(runtime: PeerRuntime, *, router_id: IPAddress, relay_command: Sequence[str]) -> str:
    """ExaBGP's configuration text for one peer (every value is typed or checked; the
    templates are read from disk once, on first use)."""
    peer = runtime.peer
    options = []
    if peer.source_address is not None and not peer.source_address.is_link_local:
        options.append(f"local-address {peer.source_address};")  # a link-local one cannot be bound by name
    if peer.interface is not None:
        options.append(f"source-interface {peer.interface};")  # validated: [A-Za-z0-9_.-]{1,15}
    if runtime.password is not None:
        # base64 keeps any byte of the key out of ExaBGP's tokenizer.
        options.append(f"md5-password {base64.b64encode(runtime.password.reveal()).decode('ascii')};")
        options.append("md5-base64 true;")
    if peer.ebgp:
        # FRR's and BIRD's default: a directly connected eBGP peer gets TTL 1.
        options.append(f"outgoing-ttl {peer.ebgp_multihop or 1};")
    if peer.graceful_restart_s is not None:
        options.append(f"capability {{ graceful-restart {peer.graceful_restart_s}; }}")
        # End-of-RIB only when bgpspeaker says every route is there: an automatic one
        # right after a restart would tell the router to flush its stale routes.
        options.append("manual-eor true;")
    families = "\n".join(f"        {family} unicast;" for family in sorted(peer.families))
    neighbor = _template("neighbor.conf.tmpl").substitute(
        peer_address=peer.peer_address,
        name=peer.name,  # validated as a DNS label
        router_id=router_id,
        local_as=peer.my_asn,
        # dynamicASN: internal is exactly our AS; external is any other (the launcher's
        # --reject-own-asn refuses our own), bgpspeaker.peeroptions.
        peer_as={"internal": str(peer.my_asn), "external": "auto"}.get(peer.dynamic_asn or "", str(peer.peer_asn)),
        hold_time=peer.hold_time_s,
        peer_port=peer.peer_port,
        options="".join(f"    {option}\n" for option in options),
        families=families,
    )
    return _template("exabgp.conf.tmpl").substitute(
        relay_command=" ".join(_safe_path(part) for part in relay_command),
        neighbors=neighbor,
    )


def session_fingerprint(runtime: PeerRuntime, router_id: IPAddress) -> str:
    """Everything that needs a new session when it changes (next hops and attributes do not)."""
    text = render_config(runtime, router_id=router_id, relay_command=["relay"])
    return f"{text}\nkeepalive={runtime.peer.keepalive_s}\nconnect_time={runtime.peer.connect_time_s}"
