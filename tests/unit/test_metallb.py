"""import-metallb: MetalLB objects in, the SpeakerConfig out, a warning per field not carried."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgpspeaker.errors import ConfigError
from bgpspeaker.metallb import convert, read_documents

HEAD = {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig"}


def mlb(kind: str, name: str, spec: dict[str, Any] | None = None, version: str = "v1beta1", **meta: Any) -> str:
    obj: dict[str, Any] = {
        "apiVersion": f"metallb.io/{version}",
        "kind": kind,
        "metadata": {"name": name, "namespace": "metallb-system", **meta},
    }
    if spec is not None:
        obj["spec"] = spec
    return yaml.safe_dump(obj)


def peer(name: str = "tor-a", version: str = "v1beta2", **spec: Any) -> str:
    return mlb("BGPPeer", name, {"myASN": 64513, "peerASN": 64512, "peerAddress": "10.0.0.1", **spec}, version)


def run(*documents: str) -> tuple[dict[str, Any], list[str]]:
    conversion = convert(read_documents("---\n".join(documents).encode(), "in.yaml"))
    return conversion.config, list(conversion.warnings)


TOR_A = {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}
EVERYTHING = [{"name": "all"}]


@dataclasses.dataclass
class Case:
    desc: str
    documents: list[str]
    want: dict[str, Any]
    """Top-level keys of the output compared whole (others not checked)."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Substrings, one per expected warning line, in order (and no other warning)."""


ADV_ALL = mlb("BGPAdvertisement", "all")
CASES = [
    Case(
        "v1beta2 peer with timers, multihop, port, source, GR, dual stack, node selectors",
        [
            peer(
                holdTime="1m30s",
                keepaliveTime="20s",
                ebgpMultiHop=True,
                peerPort=1179,
                sourceAddress="10.0.0.2",
                enableGracefulRestart=True,
                dualStackAddressFamily=True,
                nodeSelectors=[{"matchLabels": {"rack": "r1"}}],
            ),
            ADV_ALL,
        ],
        {
            "myASN": 64513,
            "peers": [
                {
                    **TOR_A,
                    "peerPort": 1179,
                    "sourceAddress": "10.0.0.2",
                    "holdTime": "90s",
                    "keepaliveTime": "20s",
                    "ebgpMultiHop": 255,
                    "gracefulRestart": "120s",
                    "families": ["ipv4", "ipv6"],
                    "nodeSelectors": [{"matchLabels": {"rack": "r1"}}],
                }
            ],
            "advertisements": EVERYTHING,
        },
    ),
    Case(
        "v1beta1 peer; hold only: keepalive = hold/3; keepalive only: hold = 3 x keepalive",
        [peer(version="v1beta1", holdTime="9s"), peer("tor-b", keepaliveTime="5s", peerAddress="10.0.1.1"), ADV_ALL],
        {
            "peers": [
                {**TOR_A, "holdTime": "9s", "keepaliveTime": "3s"},
                {
                    "name": "tor-b",
                    "peerAddress": "10.0.1.1",
                    "peerASN": 64512,
                    "holdTime": "15s",
                    "keepaliveTime": "5s",
                },
            ]
        },
    ),
    Case(
        "the most common myASN goes top-level, the others stay on their peer",
        [peer(), peer("tor-b", peerAddress="10.0.1.1"), peer("tor-c", myASN=64600, peerAddress="10.0.2.1"), ADV_ALL],
        {
            "myASN": 64513,
            "peers": [
                TOR_A,
                {"name": "tor-b", "peerAddress": "10.0.1.1", "peerASN": 64512},
                {"name": "tor-c", "peerAddress": "10.0.2.1", "peerASN": 64512, "myASN": 64600},
            ],
        },
    ),
    Case(
        "passwordSecret: MetalLB's basic-auth Secret, key 'password', its namespace by default",
        [peer(passwordSecret={"name": "tor-a-auth"}), ADV_ALL],
        {
            "peers": [
                {
                    **TOR_A,
                    "passwordSecret": {"name": "tor-a-auth", "namespace": "metallb-system", "key": "password"},
                }
            ]
        },
        ["passwordSecret metallb-system/tor-a-auth (key 'password'): grant the speaker"],
    ),
    Case(
        "clear-text password: a Secret reference, never the password itself",
        [peer(password="s3cret"), ADV_ALL],
        {
            "peers": [
                {
                    **TOR_A,
                    "passwordSecret": {
                        "name": "metallb-import-passwords",
                        "namespace": "bgpspeaker-system",
                        "key": "tor-a",
                    },
                }
            ]
        },
        ["spec.password is in clear text"],
    ),
    Case(
        "a DNS-subdomain name is renamed, advertisements follow",
        [peer("tor.a"), mlb("BGPAdvertisement", "adv", {"peers": ["tor.a", "gone"]})],
        {"peers": [TOR_A], "advertisements": [{"name": "adv", "peers": ["tor-a"]}]},
        ["renamed 'tor-a'", "no BGPPeer 'gone' converted; dropped"],
    ),
    Case(
        "routerID per peer: a node override on every node for that peer",
        [peer(routerID="10.10.10.10"), ADV_ALL],
        {
            "nodeOverrides": [
                {"name": "tor-a-router-id", "nodeSelectors": [{}], "peers": ["tor-a"], "routerID": "10.10.10.10"}
            ]
        },
        ["spec.routerID 10.10.10.10: every node uses it"],
    ),
    Case(
        "what cannot be carried: one warning each; unnumbered peers are skipped",
        [
            peer(vrf="red", localASN=65000, disableMP=True, newField=1),
            peer("tor-if", interface="eth1", peerAddress=None),
            mlb("L2Advertisement", "l2"),
            ADV_ALL,
        ],
        {"peers": [TOR_A]},
        [
            "L2Advertisement l2: not converted",
            "spec.newField: unknown to this converter",
            "spec.localASN: not carried",
            "spec.vrf: not carried",
            "spec.disableMP: not carried",
            "tor-if: spec.interface (unnumbered BGP): not supported",
        ],
    ),
    Case(
        "connectTime and dynamicASN are carried",
        [
            peer(connectTime="5s"),
            peer("tor-dyn", dynamicASN="external", peerASN=None, peerAddress="10.0.9.1"),
            ADV_ALL,
        ],
        {
            "peers": [
                {**TOR_A, "connectTime": "5s"},
                {"name": "tor-dyn", "peerAddress": "10.0.9.1", "dynamicASN": "external"},
            ]
        },
        [],
    ),
    Case(
        "pools: addresses, autoAssign, avoidBuggyIPs, namespaces, service selectors; allowedVIPRanges from them",
        [
            peer(),
            mlb(
                "IPAddressPool",
                "public",
                {
                    "addresses": ["198.51.100.0/29", "198.51.100.8-198.51.100.9", "2001:db8:1::/124"],
                    "autoAssign": False,
                    "avoidBuggyIPs": True,
                    "serviceAllocation": {
                        "priority": 10,
                        "namespaces": ["web"],
                        "serviceSelectors": [{"matchLabels": {"a": "b"}}],
                    },
                },
            ),
            ADV_ALL,
        ],
        {
            "addressPools": [
                {
                    "name": "public",
                    "addresses": ["198.51.100.0/29", "198.51.100.8-198.51.100.9", "2001:db8:1::/124"],
                    "autoAssign": False,
                    "avoidBuggyIPs": True,
                    "serviceSelectors": [{"matchLabels": {"a": "b"}}],
                    "namespaces": ["web"],
                }
            ],
            "allowedVIPRanges": ["198.51.100.0/29", "198.51.100.8/31", "2001:db8:1::/124"],
        },
        ["spec.serviceAllocation.priority: not carried"],
    ),
    Case(
        "advertisement: pools by name and by selector, communities with aliases, aggregation, selectors",
        [
            peer(),
            mlb("IPAddressPool", "a", {"addresses": ["198.51.100.0/28"]}, labels={"tier": "web"}),
            mlb("IPAddressPool", "b", {"addresses": ["198.51.100.16/28"]}),
            mlb("Community", "aliases", {"communities": [{"name": "nox", "value": "65535:65281"}]}),
            mlb(
                "BGPAdvertisement",
                "adv",
                {
                    "ipAddressPools": ["b"],
                    "ipAddressPoolSelectors": [
                        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}
                    ],
                    "communities": ["nox", "64512:100", "large:64512:1:1", "nox", "bogus"],
                    "aggregationLength": 24,
                    "aggregationLengthV6": 128,
                    "nodeSelectors": [{"matchLabels": {"zone": "z1"}}],
                },
            ),
        ],
        {
            "advertisements": [
                {
                    "name": "adv",
                    "addressPools": ["b", "a"],
                    "nodeSelectors": [{"matchLabels": {"zone": "z1"}}],
                    "aggregationLength": 24,
                    "communities": ["65535:65281", "64512:100", "large:64512:1:1"],
                }
            ]
        },
        ["ipAddressPoolSelectors resolved to the pools labelled so now (a)", "community 'bogus' is neither"],
    ),
    Case(
        "localPref reaching eBGP and iBGP peers: split, the iBGP half keeps it",
        [
            peer(),
            peer("tor-i", peerASN=64513, peerAddress="10.0.1.1"),
            mlb("BGPAdvertisement", "adv", {"localPref": 200, "serviceSelectors": [{"matchLabels": {"x": "y"}}]}),
        ],
        {
            "advertisements": [
                {"name": "adv", "peers": ["tor-a"], "serviceSelectors": [{"matchLabels": {"x": "y"}}]},
                {
                    "name": "adv-ibgp",
                    "peers": ["tor-i"],
                    "serviceSelectors": [{"matchLabels": {"x": "y"}}],
                    "localPref": 200,
                },
            ]
        },
        ["localPref 200 goes to iBGP peers only"],
    ),
    Case(
        "no BGPAdvertisement: nothing announced, as in MetalLB",
        [peer()],
        {
            "advertisements": [
                {
                    "name": "none",
                    "serviceSelectors": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "bgpspeaker.io/imported-from-metallb-without-bgpadvertisement",
                                    "operator": "Exists",
                                }
                            ]
                        }
                    ],
                }
            ]
        },
        ["no BGPAdvertisement: MetalLB announces nothing"],
    ),
    Case(
        "BFD profile in milliseconds, peer keeps its profile name; echo mode not carried",
        [
            peer(bfdProfile="fast"),
            mlb(
                "BFDProfile",
                "fast",
                {
                    "receiveInterval": 300,
                    "transmitInterval": 200,
                    "detectMultiplier": 3,
                    "passiveMode": False,
                    "minimumTtl": 254,
                    "echoMode": True,
                },
            ),
            ADV_ALL,
        ],
        {
            "peers": [{**TOR_A, "bfdProfile": "fast"}],
            "bfdProfiles": [
                {
                    "name": "fast",
                    "receiveInterval": "300ms",
                    "transmitInterval": "200ms",
                    "detectMultiplier": 3,
                    "minimumTtl": 254,
                    "passiveMode": False,
                }
            ],
        },
        ["spec.echoMode: not carried"],
    ),
    Case(
        "a kind: List and foreign objects",
        [
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [
                        yaml.safe_load(peer()),
                        yaml.safe_load(ADV_ALL),
                        {"apiVersion": "v1", "kind": "ConfigMap"},
                    ],
                }
            )
        ],
        {"peers": [TOR_A], "advertisements": EVERYTHING},
        ["ConfigMap (v1): not a MetalLB object, skipped"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.desc for case in CASES])
def test_conversion(case: Case) -> None:
    """Each MetalLB field lands where the SpeakerConfig means the same; each loss is one warning."""
    config, warnings = run(*case.documents)
    assert {key: config[key] for key in HEAD} == HEAD
    assert {key: config.get(key) for key in case.want} == case.want
    assert len(warnings) == len(case.warnings), warnings
    for warning, expected in zip(warnings, case.warnings, strict=True):
        assert expected in warning
    assert "s3cret" not in str(config) + str(warnings)


ERRORS = [
    ("not UTF-8", b"\xff\xfe", "in.yaml: not UTF-8: byte 0xff at line 1"),
    ("not YAML", b"a: [", "in.yaml: not valid YAML"),
    ("a scalar document", b"hello", "in.yaml: document 1: must be a Kubernetes object (a mapping), got 'hello'"),
    ("no kind", b"apiVersion: metallb.io/v1beta1", "in.yaml: document 1: apiVersion and kind: required strings"),
    ("ASN a string", peer(peerASN="64512").encode(), "BGPPeer tor-a: spec.peerASN: must be an integer 0..4294967295"),
    ("no peerAddress", peer(peerAddress=None).encode(), "BGPPeer tor-a: spec.peerAddress: required, an IP address"),
    ("bad duration", peer(holdTime="soon").encode(), "BGPPeer tor-a: spec.holdTime: must be a duration like 90s"),
    (
        "bad pool range",
        mlb("IPAddressPool", "p", {"addresses": ["198.51.100.9-198.51.100.1"]}).encode(),
        "IPAddressPool p: spec.addresses: '198.51.100.9-198.51.100.1' is neither a CIDR nor FIRST-LAST",
    ),
]


@pytest.mark.parametrize(("data", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_unreadable_input_is_a_precise_error(data: bytes, message: str) -> None:
    """Input that cannot be converted names the object, the field and the value."""
    with pytest.raises(ConfigError) as raised:
        convert(read_documents(data, "in.yaml"))
    assert any(problem.startswith(message) for problem in raised.value.problems), raised.value.problems


def import_metallb(path: Path) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it (its own process: the CLI configures logging globally)."""
    return subprocess.run(
        [sys.executable, "-m", "bgpspeaker.cli", "import-metallb", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exit_codes_and_streams(tmp_path: Path) -> None:
    """0 with the config on stdout and warnings on stderr; 2 with the problem on stderr only."""
    good = tmp_path / "metallb.yaml"
    good.write_text("---\n".join([peer(vrf="red"), ADV_ALL]))
    done = import_metallb(good)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["peers"] == [TOR_A]
    assert done.stderr.splitlines() == [
        "warning: BGPPeer tor-a: spec.vrf: not carried (bgpspeaker peers in the node's default VRF)"
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: [")
    done = import_metallb(bad)
    assert (done.returncode, done.stdout) == (2, "") and done.stderr.startswith(f"{bad}: not valid YAML")
    done = import_metallb(tmp_path / "missing.yaml")
    assert done.returncode == 2 and "cannot read: No such file or directory" in done.stderr
