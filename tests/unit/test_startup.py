"""The network probe started before the imports (bgpspeaker.startup, bgpspeaker.netinfo):
its answer is the probe's answer, used only for the addresses it asked about, and no
child is left behind."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest

from bgpspeaker.config import parse_config
from bgpspeaker.netinfo import StartedProbe, probe, start_probe
from bgpspeaker.peers import resolve_peers
from bgpspeaker.startup import start_early


def _config(*addresses: str) -> object:
    return parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [{"name": f"p{i}", "peerAddress": a, "peerASN": 64512} for i, a in enumerate(addresses)],
        }
    )


def _canned(addresses: tuple[str, ...], source: str) -> StartedProbe:
    """A started probe whose child prints fixed facts: every address routed via ``source``."""
    facts = {
        "routes": {a: {"interface": 7, "source": source} for a in addresses},
        "addresses": {"7": {"4": [source], "6": []}},
        "primary_ipv4": source,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", f"print({json.dumps(json.dumps(facts))})"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return StartedProbe(addresses, child)


def test_started_probe_answers_as_the_probe() -> None:
    """start_probe(...).result() is what probe() returns (loopback: no root needed)."""
    assert start_probe(["127.0.0.1"]).result() == probe(["127.0.0.1"])


def test_resolve_peers_takes_a_probe_of_the_same_addresses() -> None:
    """A probe started for exactly the peers' addresses supplies the facts (the source address here)."""
    config = _config("198.51.100.1")
    _, runtimes, facts = resolve_peers(config, probed=_canned(("198.51.100.1",), "192.0.2.7"))  # type: ignore[arg-type]
    assert runtimes["p0"].peer.source_address == ipaddress.IPv4Address("192.0.2.7")
    assert facts.primary_ipv4 == ipaddress.IPv4Address("192.0.2.7")


def test_resolve_peers_discards_a_probe_of_other_addresses() -> None:
    """A probe for other addresses (the file changed in between) is reaped and a fresh probe asked."""
    early = _canned(("198.51.100.2",), "192.0.2.7")
    _, _, facts = resolve_peers(_config("198.51.100.1"), probed=early)  # type: ignore[arg-type]
    assert facts == probe(["198.51.100.1"])
    assert early.process.returncode is not None  # reaped, not a zombie


def test_a_failed_probe_child_is_an_oserror() -> None:
    """A child that exits non-zero is an OSError naming its stderr (the load turns it into a ConfigError)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.exit('netlink says no')"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(OSError, match="netlink says no"):
        StartedProbe(("127.0.0.1",), child).result()


def test_early_is_taken_once_and_discard_reaps() -> None:
    """take() hands the probe over once; discard() reaps a probe nobody took."""
    early = start_early(_config("198.51.100.1"))  # type: ignore[arg-type]
    taken = early.take()
    assert taken is not None and taken.addresses == ("198.51.100.1",)
    assert early.take() is None
    taken.result()
    left = start_early(_config("198.51.100.1"))  # type: ignore[arg-type]
    process = left.probe.process  # type: ignore[union-attr]
    left.discard()
    assert process.returncode is not None
    left.discard()  # twice is harmless
