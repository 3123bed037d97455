"""find_configs: which documents of a file check-config validates, and how their problems are named."""

from __future__ import annotations

import pytest

from bgpspeaker.configfile import ConfigDocument, FoundConfigs, find_configs
from bgpspeaker.errors import ConfigError

CONFIG = "apiVersion: bgpspeaker.io/v1alpha1\nkind: SpeakerConfig\nmyASN: 64513\npeers: []\n"
CONFIG_DATA = {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig", "myASN": 64513, "peers": []}


def configmap(data: str, *, name: str = "bgpspeaker-config") -> str:
    body = "".join(f"    {line}\n" for line in data.splitlines())
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: bgpspeaker-system}}\n"
        f"data:\n  config.yaml: |\n{body}"
    )


CM = "ConfigMap bgpspeaker-system/bgpspeaker-config, data['config.yaml']"
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: bgpspeaker-system}\n"

CASES = [
    ("plain", CONFIG, FoundConfigs((ConfigDocument("", CONFIG_DATA),), (), (), ())),
    ("plain_broken_keeps_plain_paths", "myASN: 0\n", FoundConfigs((ConfigDocument("", {"myASN": 0}),), (), (), ())),
    ("configmap", configmap(CONFIG), FoundConfigs((ConfigDocument(CM, CONFIG_DATA),), (), (), ())),
    (
        "multi_document",
        f"{NAMESPACE}---\n{configmap(CONFIG)}---\n{CONFIG}",
        FoundConfigs(
            (
                ConfigDocument(f"document 2 ({CM})", CONFIG_DATA),
                ConfigDocument("document 3 (SpeakerConfig)", CONFIG_DATA),
            ),
            ("Namespace",),
            (),
            (),
        ),
    ),
    (
        "configmap_without_the_key",
        f"{NAMESPACE}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: other}}\ndata: {{a: b}}\n---\n{CONFIG}",
        FoundConfigs(
            (ConfigDocument("document 3 (SpeakerConfig)", CONFIG_DATA),),
            ("Namespace",),
            ("document 2 (ConfigMap other): no data key 'config.yaml' (keys: a), skipped",),
            (),
        ),
    ),
    (
        "nothing_to_check",
        f"{NAMESPACE}---\n{NAMESPACE}",
        FoundConfigs(
            (),
            ("Namespace", "Namespace"),
            (),
            ("f.yaml: no SpeakerConfig in it, nor a ConfigMap with a 'config.yaml' key (2 documents)",),
        ),
    ),
    (
        "configmap_data_not_text",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {config.yaml: 7}\n",
        FoundConfigs((), (), (), ("ConfigMap c, data['config.yaml']: must be a YAML text, got 7",)),
    ),
]


@pytest.mark.parametrize(("text", "want"), [(t, w) for _, t, w in CASES], ids=[c[0] for c in CASES])
def test_find_configs(text: str, want: FoundConfigs) -> None:
    """Each document is validated, skipped by kind, or a problem naming where it is."""
    assert find_configs(text.encode(), "f.yaml") == want


def test_configmap_data_that_is_not_yaml_is_its_problem() -> None:
    """A ConfigMap whose config.yaml is not YAML: one problem naming the ConfigMap and key."""
    found = find_configs(
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {config.yaml: 'peers: ['}\n", "f"
    )
    (problem,) = found.problems
    assert problem.startswith("ConfigMap c, data['config.yaml']: not valid YAML") and not found.configs


def test_a_file_that_is_not_yaml_is_one_problem() -> None:
    """Broken YAML anywhere in the file: ConfigError naming the file."""
    with pytest.raises(ConfigError) as error:
        find_configs(b"a: [\n---\nb: 1\n", "f.yaml")
    assert error.value.problems[0].startswith("f.yaml: not valid YAML")
