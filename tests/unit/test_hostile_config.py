"""Hostile config files: whatever the bytes, loading raises ConfigError with a readable
problem, never another exception (a reload that raised ended the running speaker)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgpspeaker.config import (  # the allow-lists are private: the fuzz draws keys from them
    _ADVERTISEMENT_KEYS,
    _PEER_KEYS,
    _SECRET_KEYS,
    _TOP_KEYS,
    MAX_CONFIG_BYTES,
    parse_config,
    parse_config_bytes,
)
from bgpspeaker.errors import ConfigError

HEADER = b"apiVersion: bgpspeaker.io/v1alpha1\nkind: SpeakerConfig\nmyASN: 64513\n"
PEER = b"peers: [{name: tor-a, peerAddress: 10.0.0.1, peerASN: 64512}]\n"


def _laughs(levels: int) -> bytes:
    lines = [b"a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        refs = b", ".join([b"*a%d" % (level - 1)] * 9)
        lines.append(b"a%d: &a%d [%s]" % (level, level, refs))
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(HEADER + PEER + b"# caf\xe9\n", "not UTF-8: byte 0xe9 at line 5", id="latin1-comment"),
        pytest.param(b"\xff\xfe" + HEADER, "not UTF-8", id="utf16-bom"),
        pytest.param(HEADER + b"peers: " + b"[" * 3000 + b"]" * 3000, "nested deeper than", id="flow-3000-deep"),
        pytest.param(
            HEADER + b"".join(b"  " * i + b"k:\n" for i in range(300)), "nested deeper than", id="block-300-deep"
        ),
        pytest.param(HEADER + b"x: " + b"1" * 5000 + b"\n", "more than 32 digits", id="int-5000-digits"),
        pytest.param(
            HEADER + b"peers: [{name: a, peerAddress: 10.0.0.1, peerASN: 1, holdTime: '" + b"1" * 5000 + b"s'}]\n",
            "peers[0].holdTime: must be a duration",
            id="duration-5000-digits",
        ),
        pytest.param(HEADER + b"shutdown: {drainSeconds: .inf}\n" + PEER, "is not a finite number", id="inf"),
        pytest.param(HEADER + b"shutdown: {drainSeconds: .nan}\n" + PEER, "is not a finite number", id="nan"),
        pytest.param(HEADER + _laughs(14), "more than 100 aliases", id="billion-laughs"),
        pytest.param(b"a: b\n---\nc: d\n", "not valid YAML", id="two-documents"),
        pytest.param(b"a" * (MAX_CONFIG_BYTES + 1), "more than a config can be", id="too-large"),
        pytest.param(b"!!python/object:os.system {}", "not valid YAML", id="python-tag"),
        pytest.param(
            HEADER + PEER + b"advertisements: [{name: x, peers: [[1]]}]\n",
            "advertisements[0].peers[0]: no peer named [1]",
            id="unhashable-peer-name",
        ),
        pytest.param(
            HEADER + PEER + b"advertisements: [{name: x, communities: ['\xd9\xa6\xd9\xa4\xd9\xa5:100']}]\n",
            "advertisements[0].communities[0]: must be 'ASN:VALUE'",
            id="arabic-digits-community",
        ),
    ],
)
def test_hostile_bytes_are_one_config_error(data: bytes, expected: str) -> None:
    """Each hostile file is a ConfigError whose problems name what is wrong, in readable size."""
    with pytest.raises(ConfigError) as raised:
        parse_config_bytes(data, "speaker.yaml")
    text = "\n".join(raised.value.problems)
    assert expected in text, text
    assert all(len(problem) <= 1200 for problem in raised.value.problems), [len(p) for p in raised.value.problems]


KEYS = sorted(
    # every key the config knows (its own allow-lists), plus the selector and lifecycle ones
    _TOP_KEYS
    | _PEER_KEYS
    | _ADVERTISEMENT_KEYS
    | _SECRET_KEYS
    | {"matchLabels", "matchExpressions", "key", "operator", "values"}
    | {"mode", "drainSeconds", "drainLocalPref", "policy", "graceSeconds", "announceAfter", "withdrawAfter"}
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["10.0.0.1", "fd00::1", "tor-a", "ipv4", "ipv6", "90s", "1h2m", "64512:100", "large:1:2:3", "In", "Exists"]
    ),
    st.sampled_from(
        ["9" * 5000 + "s", "\u0666\u0664\u0665\u0661\u0662:\u0661\u0660\u0660", "0.0.0.0/0", "\x00", "a" * 300]
    ),
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | scalars, children, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"apiVersion": st.just("bgpspeaker.io/v1alpha1"), "kind": st.just("SpeakerConfig"), "myASN": scalars},
        optional={key: documents for key in KEYS if key not in ("apiVersion", "kind", "myASN")},
    )
)
def test_any_document_is_config_or_config_error(document: dict[Any, Any]) -> None:
    """parse_config of any decoded document returns a config or raises ConfigError, nothing else."""
    try:
        parse_config(document)
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) and len(p) <= 2000 for p in error.problems)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | documents.map(lambda d: yaml.safe_dump(d).encode("utf-8", "surrogatepass")))
def test_any_bytes_are_config_or_config_error(data: bytes) -> None:
    """parse_config_bytes of any bytes returns a config or raises ConfigError, nothing else."""
    try:
        parse_config_bytes(HEADER + data, "speaker.yaml")
    except ConfigError as error:
        assert error.problems
