"""What ``check-config`` reads: a SpeakerConfig, a ConfigMap holding one, or a multi-document
file (``kubectl kustomize deploy/`` output, a manifest with several objects).

Pure: bytes in, the SpeakerConfig documents found (each with where it came from) and the
documents skipped out. A ConfigMap's SpeakerConfig is its ``config.yaml`` data key, the one
the DaemonSet and the controller mount as ``/etc/bgpspeaker/config.yaml``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bgpspeaker.config import API_VERSION, KIND, load_document, load_documents
from bgpspeaker.errors import ConfigError
from bgpspeaker.values import show

__all__ = ["CONFIGMAP_KEY", "ConfigDocument", "FoundConfigs", "find_configs"]

CONFIGMAP_KEY = "config.yaml"
"""The ConfigMap data key the pods mount as their config file."""


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigDocument:
    """One SpeakerConfig document to validate."""

    where: str
    """Prefix for its problems: empty for a file that is one plain SpeakerConfig, else e.g.
    ``document 3 (ConfigMap bgpspeaker-system/bgpspeaker-config, data['config.yaml'])`` (no
    number when the file holds one document)."""
    data: Any
    """The decoded document (``parse_config``'s input)."""


@dataclasses.dataclass(frozen=True, slots=True)
class FoundConfigs:
    """Everything ``find_configs`` saw."""

    configs: tuple[ConfigDocument, ...]
    other_kinds: tuple[str, ...]
    """The kind of each document skipped for being of another kind (``Namespace``, ``DaemonSet``, ...)."""
    skipped: tuple[str, ...]
    """One note per ConfigMap skipped for lacking the ``config.yaml`` key."""
    problems: tuple[str, ...]
    """Problems with the file's structure (no SpeakerConfig at all, a ConfigMap without the key)."""


def _name(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return "(no metadata)"
    name, namespace = metadata.get("name"), metadata.get("namespace")
    text = show(name) if not isinstance(name, str) else name
    return f"{namespace}/{text}" if isinstance(namespace, str) else text


def _is_speaker_config(document: Any) -> bool:
    """A SpeakerConfig by its kind, or (no kind at all) by its required top-level keys."""
    if not isinstance(document, dict):
        return False
    if "kind" in document:
        return document.get("kind") == KIND or document.get("apiVersion") == API_VERSION
    return "myASN" in document or "peers" in document


def find_configs(data: bytes, source: str) -> FoundConfigs:
    """The SpeakerConfig documents of a file; ConfigError when it is not YAML at all."""
    documents = [doc for doc in load_documents(data, source) if doc is not None]
    if len(documents) == 1 and not (isinstance(documents[0], dict) and documents[0].get("kind") == "ConfigMap"):
        # One document that is not a ConfigMap: a SpeakerConfig, whatever is wrong with it
        # (parse_config says what), and its problems keep their plain paths.
        return FoundConfigs((ConfigDocument("", documents[0]),), (), (), ())
    configs: list[ConfigDocument] = []
    other_kinds: list[str] = []
    skipped: list[str] = []
    problems: list[str] = []
    for number, document in enumerate(documents, start=1):
        kind = document.get("kind") if isinstance(document, dict) else None

        def where(what: str, number: int = number) -> str:
            return f"document {number} ({what})" if len(documents) > 1 else what

        if isinstance(document, dict) and kind == "ConfigMap":
            values = document.get("data")
            if not isinstance(values, dict) or CONFIGMAP_KEY not in values:
                keys = ", ".join(sorted(str(key) for key in values)) if isinstance(values, dict) else ""
                skipped.append(
                    f"{where(f'ConfigMap {_name(document)}')}: no data key {CONFIGMAP_KEY!r}"
                    f" (keys: {keys or 'none'}), skipped"
                )
                continue
            text = values[CONFIGMAP_KEY]
            place = where(f"ConfigMap {_name(document)}, data[{CONFIGMAP_KEY!r}]")
            if not isinstance(text, str):
                problems.append(f"{place}: must be a YAML text, got {show(text)}")
                continue
            try:
                configs.append(ConfigDocument(place, load_document(text.encode(), place)))
            except ConfigError as error:
                problems.extend(error.problems)
        elif _is_speaker_config(document):
            configs.append(ConfigDocument(where(KIND), document))
        else:
            other_kinds.append(kind if isinstance(kind, str) else f"(a {type(document).__name__})")
    if not configs and not problems:
        problems.append(
            f"{source}: no {KIND} in it, nor a ConfigMap with a {CONFIGMAP_KEY!r} key ({len(documents)} documents)"
        )
    return FoundConfigs(tuple(configs), tuple(other_kinds), tuple(skipped), tuple(problems))
