"""The reconciler's last-resort guard: a pass that raises is logged, counted and retried
from scratch; the same failure five times in a row ends the loop (and so the process,
through its shutdown path) instead of spinning on it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from structlog.testing import capture_logs

from bgpspeaker.cluster.model import parse_endpoint_slice
from bgpspeaker.reconciler import MAX_CONSECUTIVE_FAILURES, RETRY_S
from bgpspeaker.session import Ack, RouteChange
from lab.kubeapi import endpoint_slice
from lab.netns import wait_until
from tests.unit.test_reconciler_incremental import ME, StandInExabgp, expected, harness, set_service


class FailingExabgp(StandInExabgp):
    """A session whose next ``failures`` commands raise something unexpected (a bug)."""

    failures = 0

    def apply(self, changes: Sequence[RouteChange], *, ack_timeout_s: float | None = None) -> list[Ack]:
        if FailingExabgp.failures:
            FailingExabgp.failures -= 1
            raise RuntimeError("bug in the session layer")
        return super().apply(changes, ack_timeout_s=ack_timeout_s)


def _with_failing_sessions(failures: int, **options: Any) -> tuple[Any, Any]:
    store, reconciler, _ = harness(session_class=FailingExabgp, **options)
    FailingExabgp.failures = failures
    set_service(store, 0, "192.0.2.1", {})
    parsed = parse_endpoint_slice(
        endpoint_slice("ns", "e0", service_name="s0", endpoints=[("10.1.0.1", ME, True, True)])
    )
    store.upsert("endpointslices", parsed.key, parsed)
    return store, reconciler


def test_a_pass_that_raises_is_retried_and_converges() -> None:
    """One raising pass: logged as internal_error, counted, and the retry announces everything."""
    store, reconciler = _with_failing_sessions(1)
    with capture_logs() as logs:
        thread = threading.Thread(target=reconciler.run, daemon=True)
        thread.start()
        try:
            wait_until(
                lambda: dict(reconciler.acknowledged) == expected(store) or None,
                timeout_s=RETRY_S[0] + 5.0,
                desc=f"acknowledged = desired (last: {dict(reconciler.acknowledged)})",
            )
        finally:
            reconciler.stop()
            thread.join(5.0)
    assert reconciler.internal_errors == 1
    errors = [entry for entry in logs if entry["event"] == "internal_error"]
    assert [(e["thread"], e["consecutive"], e["retry_in_s"]) for e in errors] == [("reconciler", 1, RETRY_S[0])]
    assert "RuntimeError: bug in the session layer" in errors[0]["error"]
    assert len(expected(store)) == 2  # one VIP to both peers


def test_the_same_failure_every_pass_ends_the_loop() -> None:
    """Raising on every pass: after MAX_CONSECUTIVE_FAILURES the loop re-raises (the entry point exits)."""
    _, reconciler = _with_failing_sessions(1000, retry_s=(0.01,))  # the delays are not what is tested
    reconciler_errors: list[BaseException] = []

    def body() -> None:
        try:
            reconciler.run()
        except RuntimeError as error:
            reconciler_errors.append(error)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(10.0)
    reconciler.stop()
    assert not thread.is_alive()
    assert reconciler.internal_errors == MAX_CONSECUTIVE_FAILURES
    assert [str(e) for e in reconciler_errors] == ["bug in the session layer"]
