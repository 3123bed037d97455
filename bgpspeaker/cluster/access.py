"""The Kubernetes API access each component needs: the RBAC rules in ``deploy/`` are checked
against these tables (``tests/test_deploy.py``), so a new API call without a grant fails a test.

Each module that calls the API server declares its calls beside them as ``API_ACCESS``; a
test checks that every module building an API path declares one, and
``tests/integration/test_operator.py`` that the requests the running daemon makes are in
them. Pure data: no I/O.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator

__all__ = [
    "CONTROLLER_MODULES",
    "SPEAKER_MODULES",
    "Access",
    "controller_access",
    "speaker_access",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """One RBAC grant a component needs: ``verbs`` on ``resource`` in ``group``."""

    group: str
    """API group: ``""`` (core), ``discovery.k8s.io``, ``coordination.k8s.io``."""
    resource: str
    """Plural resource, with its subresource when one: ``services/status``."""
    verbs: frozenset[str]
    why: str
    """The call that needs it (for the reader of a failing test)."""
    named: str | None = None
    """Only this object's name is needed (``resourceNames``): None for any."""
    own_namespace: bool = False
    """Only in the component's own namespace (a Role), not cluster-wide."""

    def grants(self) -> Iterator[tuple[str, str, str]]:
        """(group, resource, verb) per verb."""
        for verb in sorted(self.verbs):
            yield self.group, self.resource, verb


SPEAKER_MODULES = (
    "bgpspeaker.cluster.watch",
    "bgpspeaker.events",
    "bgpspeaker.peers",
    "bgpspeaker.report",
    "bgpspeaker.secretwatch",
)
"""The modules whose API calls run under the speaker's ServiceAccount (``report``: ``bgpspeaker
explain`` run with ``kubectl exec`` in a speaker pod)."""


def _declared(modules: tuple[str, ...]) -> tuple[Access, ...]:
    found: list[Access] = []
    for name in modules:
        found.extend(importlib.import_module(name).API_ACCESS)
    return tuple(found)


def speaker_access() -> tuple[Access, ...]:
    """Every ``API_ACCESS`` entry of ``SPEAKER_MODULES``."""
    return _declared(SPEAKER_MODULES)


CONTROLLER_MODULES = (
    "bgpspeaker.controller.leader",
    "bgpspeaker.controller.run",
    "bgpspeaker.controller.writer",
)
"""The modules whose API calls run under the controller's ServiceAccount."""


def controller_access() -> tuple[Access, ...]:
    """Every ``API_ACCESS`` entry of ``CONTROLLER_MODULES``."""
    return _declared(CONTROLLER_MODULES)
