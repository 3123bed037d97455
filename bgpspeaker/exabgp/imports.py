"""How the launcher imports ExaBGP: without two standard-library modules it does not use
here, and without the cyclic GC meanwhile.

ExaBGP 5.0.15 imports ``asyncio`` at the top of ``exabgp.reactor.asynchronous`` and
uses it in one place, ``ASYNC.run``, to run API callbacks. bgpspeaker's launcher replaces
that method under ``--fast-reactor`` and calls upstream's only when a coroutine is queued,
which no API command of 5.0.15 queues (its callbacks are generators). ``pdb`` is imported
at the top of ``exabgp.configuration.core.error`` and ``exabgp.debug.intercept`` and used
only with ExaBGP's debug settings (``exabgp.debug.pdb``, ``exabgp.debug.configuration``).
asyncio brings ssl, concurrent.futures and ~30 modules of its own; the two are measured at
5.7 MB RSS of an idle ExaBGP's 28.7 MB and ~10 ms of its start (docs/performance.md).

While ExaBGP is imported (``importing``) each of ``DEFERRED`` not imported yet is a
stand-in in ``sys.modules``: the modules imported meanwhile bind the stand-in, and its
first attribute read imports the real module and takes its contents, so a later use
behaves as upstream (without ``--fast-reactor``, ExaBGP's own ``ASYNC.run`` calls
``asyncio.run`` on its first API command and imports asyncio then). Afterwards the
stand-ins leave ``sys.modules``: any later ``import asyncio`` or ``import asyncio.events``
is an ordinary import of the real package. (Inside, ``import asyncio.events`` would run
that submodule a second time; ExaBGP 5.0.15 imports neither package's submodules, and the
launcher imports ExaBGP this way only for a release it was written for,
``SUPPORTED_EXABGP``.)

The cyclic GC is paused during the imports (~440 modules build ~26,000 container objects
that live as long as the process; every full collection scanned them again) and what they
built is then frozen (``gc.freeze``), as the daemon does after its own imports. The imports
leave ~460 unreachable objects behind (measured): frozen with the rest, a few kB.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import types
from collections.abc import Iterable, Iterator

__all__ = ["DEFERRED", "importing"]

DEFERRED = ("asyncio", "pdb")
"""Imported by ExaBGP 5.0.15's server path, used by it only on paths bgpspeaker does not
take (see the module's docstring); imported for real at their first use all the same."""


class _StandIn(types.ModuleType):
    """A module not imported yet: the first attribute read imports it and copies its namespace here."""

    def __getattr__(self, attribute: str) -> object:
        name = self.__name__
        if sys.modules.get(name) is self:  # still inside ``importing``
            del sys.modules[name]
        module = importlib.import_module(name)
        vars(self).update(vars(module))
        return getattr(module, attribute)


@contextlib.contextmanager
def importing(deferred: Iterable[str] = DEFERRED) -> Iterator[None]:
    """Imports within are ExaBGP's: each of ``deferred`` not imported yet binds a stand-in
    (imported at its first use), and the cyclic GC waits. On a normal exit the stand-ins
    leave ``sys.modules`` and everything alive is frozen out of the GC's scans."""
    placed: dict[str, _StandIn] = {}
    for name in deferred:
        if name not in sys.modules:
            placed[name] = sys.modules[name] = _StandIn(name)
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        for name, stand_in in placed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
        if collecting:
            gc.enable()
    gc.freeze()
