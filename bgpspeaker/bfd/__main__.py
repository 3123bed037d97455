"""The BFD child process: ``python -m bgpspeaker.bfd``. One per node, started and
restarted by the daemon (``bgpspeaker.bfd.client``).

Kept small so nothing in the daemon can delay a BFD packet: it imports only the
standard library and the engine, freezes what it imported and turns the cyclic GC off
(the loop allocates only short-lived acyclic objects, which reference counting frees).

Protocol, JSON lines. On stdin, from the daemon:
  {"op": "set", "sessions": [{"peer", "local", "remote", "multihop", "interface",
   "tx_ms", "rx_ms", "multiplier", "passive", "minimum_ttl"}, ...]}   the whole set
  {"op": "admin-down"}                       every session AdminDown (diag 7)
  {"op": "shutdown", "linger_ms": N}         exit after N ms (AdminDown packets go on)
On stdout, to the daemon: {"event": "ready"}, {"event": "state", "peer", "state",
"old", "remote_state", "diag", "remote_diag", "tx_ms", "detect_ms", "monotonic"},
{"event": "timers", ...}, {"event": "removed", "peer"}, {"event": "admin_down_sent"},
{"event": "bind_failed", ...}, {"event": "input_error", "error"}, {"event": "exiting"}.
End of stdin (the daemon is gone) ends the process.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import os
import select
import sys
import time
from typing import Any

from bgpspeaker.bfd.engine import Engine, SessionSpec
from bgpspeaker.bfd.session import Timers

MAX_LINE = 1 << 20


def spec_of(item: Any) -> SessionSpec:
    """A session from its JSON form; ValueError/TypeError/KeyError when malformed."""
    interface = item.get("interface")
    if interface is not None and not isinstance(interface, str):
        raise TypeError("interface must be a string")
    return SessionSpec(
        peer=str(item["peer"]),
        local=ipaddress.ip_address(item["local"]),
        remote=ipaddress.ip_address(item["remote"]),
        multihop=bool(item.get("multihop", False)),
        interface=interface,
        timers=Timers(
            desired_min_tx_us=int(item["tx_ms"] * 1000),
            required_min_rx_us=int(item["rx_ms"] * 1000),
            detect_mult=int(item["multiplier"]),
        ),
        passive=bool(item.get("passive", False)),
        minimum_ttl=int(item.get("minimum_ttl", 254)),
    )


def _write(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> int:
    """Run until stdin closes or a shutdown command's linger ends."""
    gc.collect()
    gc.freeze()
    gc.disable()
    engine = Engine(_write)
    poller = select.poll()
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    poller.register(stdin, select.POLLIN)
    registered: dict[int, Any] = {}
    buffer = b""
    exit_at: float | None = None
    _write({"event": "ready", "pid": os.getpid()})
    engine.run_due(time.monotonic())
    while True:
        if exit_at is not None and time.monotonic() >= exit_at:
            break
        sockets = {sock.fileno(): sock for sock in engine.readable()}
        for fd in set(registered) - set(sockets):
            poller.unregister(fd)
            del registered[fd]
        for fd in set(sockets) - set(registered):
            poller.register(fd, select.POLLIN)
            registered[fd] = sockets[fd]
        deadline = engine.next_deadline()
        if exit_at is not None:
            deadline = exit_at if deadline is None else min(deadline, exit_at)
        timeout_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000) + 1)
        for fd, _mask in poller.poll(timeout_ms):
            now = time.monotonic()
            if fd != stdin:
                sock = registered.get(fd)
                if sock is not None:
                    engine.on_readable(sock, now)
                continue
            try:
                chunk = os.read(stdin, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return 0
            buffer += chunk
            if len(buffer) > MAX_LINE and b"\n" not in buffer:
                _write({"event": "input_error", "error": f"a line longer than {MAX_LINE} bytes"})
                buffer = b""
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    exit_at = _command(engine, line, now, exit_at)
        # Timers after this wake-up's packets: a packet already queued when poll returns (this
        # process scheduled late on a loaded node) counts before its detection timer is judged.
        engine.run_due(time.monotonic())
    _write({"event": "exiting"})
    return 0


def _command(engine: Engine, line: bytes, now: float, exit_at: float | None) -> float | None:
    try:
        message = json.loads(line)
        op = message["op"]
        if op == "set":
            engine.set_sessions([spec_of(item) for item in message["sessions"]], now)
        elif op == "admin-down":
            engine.admin_down(now)
            _write({"event": "admin_down_sent"})
        elif op == "shutdown":
            return now + float(message.get("linger_ms", 0)) / 1000
        else:
            raise ValueError(f"unknown op {op!r}")
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        _write({"event": "input_error", "error": f"{type(error).__name__}: {str(error)[:300]}"})
    return exit_at


if __name__ == "__main__":
    raise SystemExit(main())
