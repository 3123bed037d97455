"""The rtnetlink reader (bgpspeaker.rtnetlink) answers as pyroute2 does, here: the
network namespace the tests run in, read without privileges."""

from __future__ import annotations

import json

from bgpspeaker import netinfo, rtnetlink

ADDRESSES = ["127.0.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.200", "::1", "2001:db8::1", "fe80::1"]


def _as_json(value: object) -> object:
    return json.loads(json.dumps(value))  # pyroute2's answer travelled as JSON: keys are strings


def test_collect_equals_pyroute2_here() -> None:
    """Routes (interface, preferred source), the interfaces' global addresses and the primary IPv4."""
    assert _as_json(rtnetlink.collect(ADDRESSES)) == _as_json(netinfo._collect(ADDRESSES))


def test_probe_reads_the_facts_in_process() -> None:
    """probe() gives NetFacts from the same answer (loopback: interface 1, source 127.0.0.1)."""
    facts = netinfo.probe(["127.0.0.1"])
    interface, source = facts.routes["127.0.0.1"]
    assert interface is not None and str(source) == "127.0.0.1"
