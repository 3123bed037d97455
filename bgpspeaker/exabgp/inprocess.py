"""Our API relay inside ExaBGP: the supervisor's socket handed to ExaBGP as its helper, no second process.

ExaBGP 5.0.15 starts every API helper with ``subprocess.Popen`` and talks to it through
the pipes. Ours (``relay.py``) only copies bytes between those pipes and the supervisor's
unix socket, and costs a Python start on the way to the first route and ~11 MB RSS per
peer. The launcher's ``--inprocess-relay`` patch gives ExaBGP's ``Processes`` module a
``subprocess`` whose ``Popen`` returns an ``InProcessRelay`` instead when the command is
our relay (``[python, .../relay.py, SOCKET]``, ``relay_socket``): it connects to SOCKET
itself. The rendered config is the same either way, so ExaBGP's parser still checks the
command, and ExaBGP without the patch runs the real relay.

What ``Processes`` uses of a Popen (exabgp/reactor/api/processes.py), and what it gets:

- ``stdout.fileno()``: the socket. ExaBGP sets O_NONBLOCK on it, polls it and
  ``os.read()``s it. The socket is one open file description for both directions, so the
  writes are non-blocking from then on as well.
- ``stdin.write(bytes)`` and ``flush()``: ExaBGP expects a blocking pipe. ``write`` sends
  every byte, waiting in ``poll(POLLOUT)`` whenever the socket is full (no busy loop, no
  byte lost); ``flush`` has nothing to do.
- ``poll()``: None while connected, a code once the supervisor closed its end (seen with a
  ``MSG_PEEK``, so only after every byte before the close was read), a write found it gone,
  or ``terminate``/``kill`` ran. ExaBGP's read loop leaves an end of file only when
  ``poll()`` is not None; it then respawns the helper, which connects again.
- ``terminate()``, ``kill()``: close the socket; ``wait(timeout)``: the code.

The supervisor's end gone (EPIPE, ECONNRESET) while ExaBGP writes: the bytes are dropped and
``poll()`` reports an exit, as the relay drops what it cannot send and exits. Raising the
OSError would not be better: ExaBGP's ``write`` turns any OSError into a helper marked
broken for good (``Processes._broken``), whereupon ``Peer.run`` stops the peer ("ExaBGP lost
the helper process for this peer - stopping") and an ``up`` event that fails tears the
session down with NOTIFICATION 6/0. The acks so lost belong to a connection the supervisor
already gave up (its ``execute`` failed with it).

A socket that cannot be connected (missing, refused): an ``InProcessRelay`` that has
already exited with code 1, and one line on stderr (ExaBGP's log), as the relay exits when
its connect fails. ExaBGP respawns it and, after 5 deaths in its window, exits, so the
supervisor restarts ExaBGP. An OSError from ``Popen`` would instead put the helper in
``_broken``: ExaBGP would stop the peer and run on with no API at all.

This module imports the standard library only: it runs inside every ExaBGP.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["CONNECT_TIMEOUT_S", "RELAY", "InProcessRelay", "SubprocessWithRelay", "connect", "relay_socket"]

RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.py")
"""The relay the supervisor names in ExaBGP's config (``bgpspeaker/exabgp/relay.py``)."""

CONNECT_TIMEOUT_S = 5.0
"""A connect to a unix socket completes at once, or waits while the listener's backlog is
full: the supervisor accepts within its 0.2 s accept timeout, so this is generous."""

_WAKE_S = 1.0  # a write waiting for room looks again this often (the socket closed under it)


def relay_socket(command: Sequence[str]) -> str | None:
    """SOCKET when ``command`` runs our relay (``[python, .../relay.py, SOCKET]``), else None."""
    if len(command) != 3 or os.path.basename(command[1]) != "relay.py":
        return None
    try:
        ours = os.path.samefile(command[1], RELAY)
    except OSError:  # no such file: not ours
        return None
    return command[2] if ours else None


class _Stdout:
    """The helper's stdout as ExaBGP reads it: only its descriptor is used."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()  # -1 once closed: ExaBGP's reactor skips it


class _Stdin:
    """The helper's stdin as ExaBGP writes it: ``write`` blocks until every byte is sent."""

    def __init__(self, relay: InProcessRelay) -> None:
        self._relay = relay

    def write(self, data: bytes) -> int:
        return self._relay.send(data)

    def flush(self) -> None:
        """Nothing is buffered here."""

    def fileno(self) -> int:
        return self._relay.sock.fileno()


class InProcessRelay:
    """What ExaBGP's ``Processes`` uses of a ``subprocess.Popen``, over a connected unix socket."""

    def __init__(self, args: Sequence[str], sock: socket.socket, returncode: int | None = None) -> None:
        self.args = list(args)
        self.sock = sock
        self.returncode = returncode
        """None while connected; 0 after the supervisor closed its end, 1 after a socket
        error (or no connection at all), -SIGTERM/-SIGKILL after ``terminate``/``kill``."""
        self.stdout = _Stdout(sock)
        self.stdin = _Stdin(self)
        self.dropped_bytes = 0
        """What ExaBGP wrote after the supervisor's end was gone."""

    def send(self, data: bytes) -> int:
        """Every byte of ``data`` to the supervisor, waiting for room as often as needed;
        dropped (and the relay marked ended) when the supervisor's end is gone."""
        view = memoryview(data)
        while view:
            if self.returncode is not None:
                self.dropped_bytes += len(view)
                break
            try:
                # MSG_DONTWAIT: the same whether or not ExaBGP set O_NONBLOCK already.
                sent = self.sock.send(view, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                self._wait(select.POLLOUT, _WAKE_S)
                continue
            except OSError:  # EPIPE, ECONNRESET, closed: the supervisor's end is gone
                self.returncode = 1
                continue
            view = view[sent:]
        return len(data)

    def poll(self) -> int | None:
        """None while the supervisor's end is open (or its unread bytes are still waiting)."""
        if self.returncode is None:
            try:
                peeked = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            except OSError:  # ECONNRESET, or closed
                self.returncode = 1
            else:
                if not peeked:
                    self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The code, once the supervisor closed its end or ``terminate``/``kill`` ran;
        ``subprocess.TimeoutExpired`` after ``timeout`` seconds otherwise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            # Not POLLIN: bytes waiting to be read are no end, and would make this spin.
            if self._wait(select.POLLRDHUP, _WAKE_S if left is None else min(left, _WAKE_S)):
                self.returncode = 0
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        """Close the connection: the supervisor reads its end of file."""
        self._close(-signal.SIGTERM)

    def kill(self) -> None:
        """As ``terminate``: there is no process to kill."""
        self._close(-signal.SIGKILL)

    def _close(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected (any more)
            pass
        self.sock.close()

    def _wait(self, events: int, timeout_s: float) -> bool:
        """True when the socket reports ``events`` (or a hang-up, an error) within ``timeout_s``."""
        if self.sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(self.sock, events | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(timeout_s * 1000))


def connect(args: Sequence[str], path: str) -> InProcessRelay:
    """An ``InProcessRelay`` connected to the supervisor's socket ``path``; one that has
    already exited with code 1 when the connect fails (said on stderr, ExaBGP's log)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(path)
        sock.settimeout(None)
    except OSError as error:
        sock.close()
        print(f"bgpspeaker's API relay could not connect to {path}: {error}", file=sys.stderr, flush=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.close()  # reads at once as an end of file, as a dead helper's pipe does
        return InProcessRelay(args, ours, returncode=1)
    return InProcessRelay(args, sock)


class SubprocessWithRelay:
    """The ``subprocess`` module as ExaBGP's ``Processes`` sees it once patched: ``Popen``
    of our relay gives an ``InProcessRelay``; everything else is the module's own."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def Popen(self, args: Sequence[str], **options: Any) -> Any:  # the name ExaBGP calls
        path = relay_socket(args)
        if path is None:
            return self._module.Popen(args, **options)
        return connect(args, path)
