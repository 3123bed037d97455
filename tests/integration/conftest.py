"""Integration fixtures: each test gets its own single-node topology (lab/topology.py).

FRR in one network namespace, the real speaker in another, a real-HTTP API server
inside the speaker's namespace; everything is removed by PID and name afterwards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from lab.netns import Lab
from lab.topology import NODE, SingleNode, single_node

__all__ = ["NODE", "Topology", "require_prerequisites"]

Topology = SingleNode


def _requirements_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "vtysh"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not os.path.exists("/usr/lib/frr/bgpd"):
        return "needs FRR (/usr/lib/frr/bgpd)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = _requirements_missing()
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            # Outside CI a machine without root/FRR skips; in CI the fixture fails loudly.
            if missing and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason=missing))


def require_prerequisites() -> None:
    """Fail loudly (the collection hook already skipped outside CI) when root or FRR is missing."""
    missing = _requirements_missing()
    if missing:
        raise RuntimeError(f"integration prerequisites missing: {missing}")


@pytest.fixture
def topology() -> Iterator[Topology]:
    require_prerequisites()
    with Lab() as lab:
        built = single_node(lab)
        try:
            yield built
        finally:
            built.close()
