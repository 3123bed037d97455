"""The README's router config (install section, step 6), run as written in FRR against the real
speaker: the nodes' sessions come in through the listen range, a VIP inside the example's
range is best in FRR, one outside it is refused by the import policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, http_get, wait_until
from lab.topology import NODE, single_node
from tests.integration.conftest import require_prerequisites

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def router_block() -> str:
    """The README's one FRR block (the text block with a listen range)."""
    (block,) = [
        match.group(1)
        for match in re.finditer(r"^```text\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
        if "bgp listen range" in match.group(1)
    ]
    return block


def test_readme_router_config_takes_the_nodes_and_only_the_vip_range() -> None:
    """FRR runs the README's block: every line accepted, the node peers, 192.0.2.10 best, 198.51.100.10 refused."""
    require_prerequisites()
    block = router_block()
    with Lab() as lab:
        topology = single_node(lab, frr_config=block)
        try:
            running = {line.strip() for line in topology.frr.vtysh("show running-config").splitlines()}
            refused = [
                line.strip()
                for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("!") and line.strip() not in running
            ]
            assert not refused, f"lines FRR did not take: {refused}"
            for name, ip in (("web", "192.0.2.10"), ("stray", "198.51.100.10")):
                topology.api.apply(service("default", name, ips=[ip]))
                topology.api.apply(
                    endpoint_slice(
                        "default", f"{name}-1", service_name=name, endpoints=[("10.244.1.5", NODE, True, True)]
                    )
                )
            topology.speaker.start()
            wait_until(lambda: "192.0.2.10/32" in topology.frr.best_paths(), timeout_s=30, desc="the VIP best in FRR")
            # The speaker announced both (ExaBGP acknowledged them); the router kept only the one in range.
            status = wait_until(
                lambda: (
                    (d := json.loads(http_get(topology.speaker.netns, "http://127.0.0.1:9480/status")[1]))
                    and {p["prefix"] for p in d["prefixes"]} >= {"192.0.2.10/32", "198.51.100.10/32"}
                    and d
                ),
                timeout_s=15,
                desc="both prefixes acknowledged by the speaker's ExaBGP",
            )
            assert status["peers"][0]["state"] == "established"
            neighbor = topology.frr.neighbor("10.0.0.2")
            print(json.dumps({k: neighbor.get(k) for k in ("bgpState", "dynamicPeer", "peerGroup")}))
            assert neighbor["bgpState"] == "Established" and neighbor.get("peerGroup") == "NODES"
            assert neighbor["addressFamilyInfo"]["ipv4Unicast"]["acceptedPrefixCounter"] == 1
            assert "198.51.100.10/32" not in topology.frr.best_paths()
        finally:
            topology.close()
