"""A small HTTP/1.0 server for metrics, probes and /status that strangers cannot exhaust.

One selector thread accepts, reads request heads and writes replies, enforcing every
deadline; two workers build the slow replies (``/metrics``, ``/status``). Limits
(``HttpLimits``): a head must arrive within 5 s and fit 8 KiB; 64 connections at most,
the oldest idle one closed for a newcomer; so a probe is never starved and the thread
count never depends on the number of clients.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import errno
import ipaddress
import math
import queue
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol, TypeAlias

import structlog

from bgpspeaker.routes import IPAddress

__all__ = [
    "METHODS",
    "HttpLimits",
    "HttpServer",
    "Render",
    "Reply",
    "Request",
    "Router",
    "is_local_client",
    "parse_request_line",
]

log = structlog.get_logger("bgpspeaker.observe")


def is_local_client(client: IPAddress | None, local: IPAddress | None) -> bool:
    """A client on this host: its source is loopback, or the very address it connected to.

    A connection from this host to its own node IP has source == destination. A remote
    host cannot complete a TCP handshake with our own address as its source (our SYN-ACK
    would go to ourselves, and Linux drops packets from outside claiming a local source).
    IPv4-mapped IPv6 addresses count as the IPv4 address; an unknown address is not local.
    """
    if client is None or local is None:
        return False
    client, local = _unmapped(client), _unmapped(local)
    return client.is_loopback or client == local


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _sockaddr_ip(sockaddr: Any) -> IPAddress | None:
    """The IP of a ``getpeername()``/``getsockname()`` tuple; None when it is not one."""
    try:
        return _unmapped(ipaddress.ip_address(sockaddr[0]))
    except (ValueError, TypeError, IndexError):
        return None


# --- requests and replies ----------------------------------------------------------------

METHODS = frozenset({"GET", "HEAD"})


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head: what the router needs, nothing more (headers are not read)."""

    method: str
    path: str
    """The target without its query string."""
    client: IPAddress | None
    """The connection's source address."""
    local: IPAddress | None
    """The address the connection arrived on (``getsockname``), not the listen address."""


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A whole response; the server adds Content-Length, Date and ``Connection: close``."""

    code: int
    body: bytes
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()


Render: TypeAlias = Callable[[], Reply]
"""A reply too slow for the I/O loop (it walks every route); a render worker calls it."""


class Router(Protocol):
    """What the server serves: a reply now, or a ``Render`` for a worker."""

    def route(self, request: Request) -> Reply | Render:
        """The reply to ``request``, or the work that makes it."""
        ...


_INTERNAL_ERROR = Reply(500, b"internal error\n")


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """``METHOD TARGET HTTP/x.y`` from the start of a request head -> (method, path); None when malformed."""
    line = head.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/") or not parts[0].isalpha():
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not target:
        return None
    return method, target.split("?", 1)[0]


def _head_end(buffer: bytearray, start: int) -> int | None:
    """Index just past the blank line ending the head (CRLF or bare LF), searching from ``start``."""
    crlf = buffer.find(b"\r\n\r\n", start)
    lf = buffer.find(b"\n\n", start)
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else None


def encode_reply(reply: Reply, *, head_only: bool = False) -> bytes:
    """The bytes on the wire: an HTTP/1.0 status line, headers, and the body unless ``head_only``."""
    try:
        phrase = HTTPStatus(reply.code).phrase
    except ValueError:
        phrase = ""
    lines = [
        f"HTTP/1.0 {reply.code} {phrase}",
        "Server: bgpspeaker",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in reply.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + reply.body


# --- the server -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class HttpLimits:
    """What any one client may take from the HTTP server; it answers strangers on the node IP."""

    head_timeout_s: float = 5.0
    """From accept to the end of the request head. curl, Prometheus and the kubelet send the
    whole head in one packet; 5 s still lets a lossy link retransmit, and drops a slowloris
    client (the deadline is absolute: trickling bytes does not extend it)."""
    write_timeout_s: float = 10.0
    """From the complete head to the last byte of the reply, rendering included: Prometheus'
    default scrape timeout, after which nobody reads the answer anyway."""
    max_connections: int = 64
    """Open connections at once. Prometheus, two kubelet probes and an operator need a handful;
    64 bounds file descriptors and memory. A new connection beyond it evicts the oldest idle one."""
    max_head_bytes: int = 8192
    """Request line and headers together (nginx's default buffer); larger gets 431 and a close."""
    render_workers: int = 2
    """Threads rendering ``/metrics`` and ``/status`` (tens of ms at 10k services, under the GIL:
    two let a scrape and a status overlap; more only contend)."""
    linger_s: float = 1.0
    """After the reply, how long unread client bytes are drained before closing, so that the
    close does not reset the connection before the client read the reply (e.g. a 431)."""


class _Phase(enum.Enum):
    READING = "reading"
    """Waiting for the request head (idle: evicted first)."""
    RENDERING = "rendering"
    """Queued for or held by a render worker."""
    WRITING = "writing"
    """Sending the reply."""
    LINGERING = "lingering"
    """Reply sent and our side shut down; draining what the client still sends (idle)."""


_IDLE = frozenset({_Phase.READING, _Phase.LINGERING})


class _DropReason(enum.StrEnum):
    """Why the server closed a connection without a reply."""

    HEAD_TIMEOUT = "head_timeout"
    REPLY_TIMEOUT = "reply_timeout"
    CONNECTION_CAP = "connection_cap"
    """Evicted (the oldest idle connection) to admit a new one."""
    FDS_EXHAUSTED = "fds_exhausted"
    """Evicted (the oldest idle connection) because accept failed with EMFILE/ENFILE."""


@dataclasses.dataclass(eq=False, slots=True)
class _Connection:
    sock: socket.socket
    client: IPAddress | None
    local: IPAddress | None
    deadline: float
    phase: _Phase = _Phase.READING
    head: bytearray = dataclasses.field(default_factory=bytearray)
    head_only: bool = False
    """A HEAD request: the reply goes without its body."""
    out: memoryview | None = None
    lingered: int = 0
    events: int = 0
    """What the selector watches this socket for (0: not registered)."""
    closed: bool = False
    """Set by the loop only; a render worker reads it to skip work nobody will read."""


class _Throttle:
    """At most one log line per key per interval; the next one carries how many were skipped."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        self._lock = threading.Lock()  # the I/O loop and the render workers both log

    def admit(self, key: str, now: float) -> int | None:
        """Skipped count since the last admitted line, or None: stay quiet."""
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._skipped[key] = self._skipped.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._skipped.pop(key, 0)


_LOG_INTERVAL_S = 10.0
"""One line per kind of connection trouble per 10 s: a flood of bad clients must not flood the log."""
_ACCEPT_PAUSE_S = 0.1
"""After EMFILE/ENFILE with nothing idle to close: stop polling the listener this long (no busy loop)."""
_LISTEN_BACKLOG = 128
"""Completed handshakes the kernel queues for us; a burst beyond it is retried by the client's SYN."""
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_LISTENER, _WAKEUP = object(), object()


class HttpServer:
    """A bounded HTTP/1.0 server: one I/O thread, a few render workers, a connection cap.

    - One thread runs a selector loop that accepts, reads request heads, writes replies
      and enforces every deadline; ``limits.render_workers`` threads render the slow
      routes. The thread count is fixed, whatever the number of clients.
    - Each connection gets ``head_timeout_s`` from accept to the end of its request head
      (absolute, so a slowloris client is dropped), ``write_timeout_s`` for its reply, and
      at most ``max_head_bytes`` of head (then 431). One request per connection.
    - At ``max_connections``, a new connection evicts the oldest *idle* one (still reading
      its head, or lingering after its reply), or the oldest of any kind when none is
      idle; the newcomer is always admitted. Clients that connect and send nothing
      therefore cannot lock out a health probe, which sends its request at once.
    - Cheap replies (probes, refusals) are computed on the I/O thread, so a queue of
      renders never delays ``/healthz``.
    - No per-connection error ends the loop: failures close that connection and are
      logged, rate-limited, as ``http_connection_failed``; EMFILE/ENFILE on accept closes
      the oldest idle connection or pauses accepting for a moment (``http_accept_failed``).
    """

    def __init__(self, host: str, port: int, router: Router, limits: HttpLimits) -> None:
        self.host = host
        self.port = port
        self._router = router
        self._limits = limits
        self._conns: dict[_Connection, None] = {}
        """Open connections in accept order (the oldest first, for eviction)."""
        self._jobs: queue.SimpleQueue[tuple[_Connection, Render, str] | None] = queue.SimpleQueue()
        self._done: collections.deque[tuple[_Connection, Reply]] = collections.deque()
        self._throttle = _Throttle(_LOG_INTERVAL_S)
        self._selector: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._accept_paused_until: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> int:
        """Bind, listen and start the threads; returns the bound port (OSError when binding fails)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(_LISTEN_BACKLOG)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKEUP)
        self._threads = [threading.Thread(target=self._loop, name="observe-http", daemon=True)] + [
            threading.Thread(target=self._render_worker, name=f"observe-render-{i}", daemon=True)
            for i in range(self._limits.render_workers)
        ]
        for thread in self._threads:
            thread.start()
        return int(listener.getsockname()[1])

    def stop(self) -> None:
        """Stop the threads and close every socket."""
        if not self._threads:
            return
        self._stop.set()
        self._wake()
        for _ in range(self._limits.render_workers):
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []

    # -- the I/O loop (the only thread reading or writing client sockets and connection state) --

    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while not self._stop.is_set():
                try:
                    self._turn(selector)
                except Exception as error:  # noqa: BLE001  # a bug in the loop itself: keep serving the probes
                    self._note_failure("http_loop_failed", None, error, time.monotonic())
                    self._stop.wait(_ACCEPT_PAUSE_S)  # a failing loop must not spin
        finally:
            self._close_all()

    def _turn(self, selector: selectors.BaseSelector) -> None:
        events = selector.select(self._next_timeout(time.monotonic()))
        now = time.monotonic()
        for key, _mask in events:
            if key.data is _LISTENER:
                self._accept(now)
            elif key.data is _WAKEUP:
                self._drain_wakeup()
            else:
                self._service(key.data, now)
        self._collect_renders(now)
        self._expire(now)
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            assert self._listener is not None
            selector.register(self._listener, selectors.EVENT_READ, _LISTENER)

    def _next_timeout(self, now: float) -> float:
        soonest = min((conn.deadline for conn in self._conns), default=math.inf)
        if self._accept_paused_until is not None:
            soonest = min(soonest, self._accept_paused_until)
        return min(max(soonest - now, 0.0), 1.0)

    def _accept(self, now: float) -> None:
        assert self._listener is not None
        # A bounded batch, so that connections already accepted get read between bursts.
        for _ in range(max(1, self._limits.max_connections // 4)):
            try:
                sock, _address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno not in _RESOURCE_ERRNOS:
                    self._note_failure("http_accept_failed", None, error, now)
                    continue  # ECONNABORTED and the like: that one client's problem
                # Linux takes the descriptor before looking at the queue: EMFILE may only mean
                # that nobody is waiting. Make room only for a connection that is.
                if _readable(self._listener):
                    self._note_failure("http_accept_failed", None, error, now)
                    if not self._evict(now, _DropReason.FDS_EXHAUSTED, idle_only=True):
                        self._pause_accepting(now)
                return
            self._admit(sock, now)

    def _pause_accepting(self, now: float) -> None:
        assert self._selector is not None and self._listener is not None
        self._selector.unregister(self._listener)
        self._accept_paused_until = now + _ACCEPT_PAUSE_S

    def _admit(self, sock: socket.socket, now: float) -> None:
        try:
            sock.setblocking(False)
            conn = _Connection(
                sock=sock,
                client=_sockaddr_ip(sock.getpeername()),
                local=_sockaddr_ip(sock.getsockname()),
                deadline=now + self._limits.head_timeout_s,
            )
        except OSError as error:  # reset before we looked at it
            sock.close()
            self._note_failure("http_connection_failed", None, error, now)
            return
        if len(self._conns) >= self._limits.max_connections:
            self._evict(now, _DropReason.CONNECTION_CAP, idle_only=False)
        self._conns[conn] = None
        self._watch(conn, selectors.EVENT_READ)
        self._service(conn, now)  # the head often arrived with the handshake

    def _evict(self, now: float, reason: _DropReason, *, idle_only: bool) -> bool:
        """Close the oldest idle connection (or, unless ``idle_only``, the oldest at all); False if none."""
        victim = next((c for c in self._conns if c.phase in _IDLE), None)
        if victim is None and not idle_only:
            victim = next(iter(self._conns), None)
        if victim is None:
            return False
        self._drop(victim, reason, now)
        return True

    def _service(self, conn: _Connection, now: float) -> None:
        """Advance one connection on readiness; any failure closes it, never the loop."""
        if conn.closed:  # evicted earlier in this same turn
            return
        try:
            if conn.phase is _Phase.READING:
                self._read_head(conn, now)
            elif conn.phase is _Phase.WRITING:
                self._write(conn, now)
            elif conn.phase is _Phase.LINGERING:
                self._linger(conn)
        except Exception as error:  # noqa: BLE001  # OSError from a peer, or a bug: either way only this connection
            self._close(conn)
            self._note_failure("http_connection_failed", conn, error, now)

    def _read_head(self, conn: _Connection, now: float) -> None:
        limit = self._limits.max_head_bytes
        searched = max(0, len(conn.head) - 3)
        try:
            data = conn.sock.recv(limit + 1 - len(conn.head))
        except BlockingIOError:
            return
        if not data:  # the client gave up before asking
            self._close(conn)
            return
        conn.head += data
        end = _head_end(conn.head, searched)
        if end is None or end > limit:
            if len(conn.head) > limit:
                self._refuse(conn, "head_too_large", Reply(431, b"request head too large\n"), now)
            return
        parsed = parse_request_line(bytes(conn.head[:end]))
        if parsed is None:
            self._refuse(conn, "malformed_request_line", Reply(400, b"bad request line\n"), now)
            return
        method, path = parsed
        request = Request(method=method, path=path, client=conn.client, local=conn.local)
        conn.head_only = method == "HEAD"
        try:
            answer = self._router.route(request)
        except Exception as error:  # noqa: BLE001  # a bug in a probe must not take the daemon down
            self._handler_failed(path, error)
            answer = _INTERNAL_ERROR
        conn.deadline = now + self._limits.write_timeout_s
        if isinstance(answer, Reply):
            self._reply(conn, answer, now=now)
            return
        conn.phase = _Phase.RENDERING
        self._watch(conn, 0)
        self._jobs.put((conn, answer, path))

    def _refuse(self, conn: _Connection, reason: str, reply: Reply, now: float) -> None:
        skipped = self._throttle.admit(f"http_request_refused:{reason}", now)
        if skipped is not None:
            log.debug(
                "http_request_refused", reason=reason, status=reply.code, client=_text(conn.client), skipped=skipped
            )
        conn.deadline = now + self._limits.write_timeout_s
        self._reply(conn, reply, now=now)

    def _reply(self, conn: _Connection, reply: Reply, *, now: float) -> None:
        conn.out = memoryview(encode_reply(reply, head_only=conn.head_only))
        conn.phase = _Phase.WRITING
        self._write(conn, now)

    def _write(self, conn: _Connection, now: float) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            conn.out = conn.out[sent:]
        conn.sock.shutdown(socket.SHUT_WR)
        conn.phase = _Phase.LINGERING
        conn.deadline = now + self._limits.linger_s
        self._watch(conn, selectors.EVENT_READ)

    def _linger(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        conn.lingered += len(data)
        if not data or conn.lingered > 16 * self._limits.max_head_bytes:
            self._close(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns if c.deadline <= now]:
            if conn.phase is _Phase.LINGERING:
                self._close(conn)
            else:
                reason = _DropReason.HEAD_TIMEOUT if conn.phase is _Phase.READING else _DropReason.REPLY_TIMEOUT
                self._drop(conn, reason, now)

    def _drop(self, conn: _Connection, reason: _DropReason, now: float) -> None:
        self._close(conn)
        skipped = self._throttle.admit(f"http_connection_dropped:{reason}", now)
        if skipped is not None:
            log.debug("http_connection_dropped", reason=str(reason), client=_text(conn.client), skipped=skipped)

    def _watch(self, conn: _Connection, events: int) -> None:
        assert self._selector is not None
        if events == conn.events:
            return
        if conn.events and events:
            self._selector.modify(conn.sock, events, conn)
        elif events:
            self._selector.register(conn.sock, events, conn)
        else:
            self._selector.unregister(conn.sock)
        conn.events = events

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn, None)
        if conn.events:
            assert self._selector is not None
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):  # already gone: nothing to undo
                pass
            conn.events = 0
        conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._conns):
            self._close(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()

    def _note_failure(self, event: str, conn: _Connection | None, error: Exception, now: float) -> None:
        """Log a failure once per interval per event; a bug (not an OSError) with its traceback."""
        skipped = self._throttle.admit(event, now)
        if skipped is None:
            return
        client = None if conn is None else _text(conn.client)
        if isinstance(error, OSError):
            level = log.warning if event == "http_accept_failed" else log.debug
            level(event, client=client, error=str(error), errno=error.errno, skipped=skipped)
        else:
            log.error(event, client=client, error=repr(error), skipped=skipped, exc_info=error)

    def _handler_failed(self, path: str, error: Exception) -> None:
        """A bug in a route: the client sees a 500; the log gets the traceback (once per interval:
        strangers can repeat the request)."""
        skipped = self._throttle.admit(f"http_handler_failed:{path}", time.monotonic())
        if skipped is not None:
            log.error("http_handler_failed", path=path, skipped=skipped, exc_info=error)

    # -- render workers --

    def _render_worker(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, render, path = job
            if conn.closed:  # evicted or timed out while queued: nobody reads the answer
                continue
            try:
                reply = render()
            except Exception as error:  # noqa: BLE001  # a bug in a route must not take the daemon down
                self._handler_failed(path, error)
                reply = _INTERNAL_ERROR
            self._done.append((conn, reply))
            self._wake()

    def _wake(self) -> None:
        if self._wake_w is None:
            return
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the pipe is full (a wakeup is pending anyway) or closed at stop
            pass

    def _drain_wakeup(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _collect_renders(self, now: float) -> None:
        while self._done:
            conn, reply = self._done.popleft()
            if conn.closed:
                continue
            try:
                self._reply(conn, reply, now=now)
            except Exception as error:  # noqa: BLE001  # as in _service: only this connection
                self._close(conn)
                self._note_failure("http_connection_failed", conn, error, now)


def _readable(sock: socket.socket) -> bool:
    """Data (or, for a listener, a connection) waiting; poll(2) needs no descriptor of its own."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _text(address: IPAddress | None) -> str | None:
    return None if address is None else str(address)
