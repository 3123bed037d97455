"""A stand-in for the ExaBGP child behind the ``Session`` interface, for tests and benches
that drive the reconciler in-process: assertions go on the reconciler's state, never on
what the stand-in was called with."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import IPAddress
from bgpspeaker.session import Ack, RouteChange, SessionStatus


class StandInExabgp:
    """A ``Session`` that acknowledges every change, except the ones ``refusals`` marks
    (one flag per change, in order, consumed as changes come)."""

    def __init__(self, runtime: PeerRuntime, router_id: IPAddress) -> None:
        self.runtime = runtime
        self.router_id = router_id
        self.since = time.monotonic()
        self.up_count = 1
        self.generation = 1
        self.refusals: list[bool] = []

    @property
    def name(self) -> str:
        return self.runtime.peer.name

    def accepts(self, runtime: PeerRuntime, router_id: IPAddress) -> bool:
        return runtime.peer == self.runtime.peer and router_id == self.router_id

    def start(self) -> None:
        pass

    def stop(self, timeout_s: float = 3.0) -> None:
        pass

    def retune(self, runtime: PeerRuntime) -> None:
        self.runtime = runtime

    def hasten(self, ack_timeout_s: float) -> None:
        pass

    def apply(self, changes: Sequence[RouteChange], *, ack_timeout_s: float | None = None) -> list[Ack]:
        return [not (self.refusals.pop(0) if self.refusals else False) for _ in changes]

    def end_of_rib(self) -> bool:
        return True

    def status(self) -> SessionStatus:
        return SessionStatus(
            self.name, self.runtime, "up", self.since, generation=self.generation, up_count=self.up_count
        )
