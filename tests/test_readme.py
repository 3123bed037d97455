"""The README's examples work: every SpeakerConfig in it passes ``check-config``, and the files
its install section names exist. New examples are picked up by what they are, not by a list."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def is_speaker_config(document: Any) -> bool:
    """A SpeakerConfig by its kind, a ConfigMap holding one, or (no kind) a document with the
    required top-level keys; a fragment (e.g. only ``addressPools``) is none of these."""
    if not isinstance(document, dict):
        return False
    if document.get("kind") == "SpeakerConfig":
        return True
    if document.get("kind") == "ConfigMap":
        return "config.yaml" in (document.get("data") or {})
    return "kind" not in document and {"myASN", "peers"} <= document.keys()


def config_blocks() -> list[tuple[int, str]]:
    """(line number, text) of every YAML block of the README holding a SpeakerConfig."""
    blocks = []
    for match in FENCE.finditer(README):
        text = match.group(1)
        line = README[: match.start()].count("\n") + 1
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            continue  # not YAML on its own (a fragment with placeholders): check-config cannot take it either
        if any(is_speaker_config(doc) for doc in documents):
            blocks.append((line, text))
    return blocks


BLOCKS = config_blocks()


def test_the_readme_has_the_complete_example() -> None:
    """The detection finds the complete example (so a broken detector cannot pass every block by finding none)."""
    assert any("complete example" in README[: README.index(text)][-400:].lower() for _line, text in BLOCKS)


@pytest.mark.parametrize(("line", "text"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_config_passes_check_config(line: int, text: str, tmp_path: Path) -> None:
    """``bgpspeaker check-config`` accepts the block as written."""
    path = tmp_path / f"readme-{line}.yaml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "bgpspeaker.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, ""), f"README.md:{line}\n{result.stderr}"


def test_paths_the_readme_names_exist() -> None:
    """Every ``deploy/...``, ``scripts/...``, ``docs/...`` file the README names is in the repository."""
    paths = set(re.findall(r"(?<![\w/.])((?:deploy|scripts|docs|tests|lab)/[\w/-]*\.\w+)", README))
    assert "deploy/kustomization.yaml" in paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, missing


def test_the_install_sections_version_command_gives_the_image_tag() -> None:
    """The README's ``VERSION=$(...)`` line, run in the repository, gives the tag deploy/ names."""
    (line,) = [line for line in README.splitlines() if line.startswith("VERSION=$(")]
    command = line.split("#", 1)[0].strip()
    result = subprocess.run(
        ["bash", "-c", f'{command}; printf %s "$VERSION"'], cwd=REPO, capture_output=True, text=True, check=True
    )
    tags = re.findall(r'newTag: "([^"]+)"', (REPO / "deploy" / "kustomization.yaml").read_text())
    assert [result.stdout] == tags
