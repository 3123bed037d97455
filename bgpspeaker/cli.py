"""The ``bgpspeaker`` command: ``run`` the daemon, ``check-config`` a file.

This is the only place that exits. Signals only set a flag; the main thread notices
it, withdraws, stops ExaBGP and returns.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import structlog

from bgpspeaker import __version__
from bgpspeaker.config import MAX_CONFIG_BYTES, SpeakerConfig, load_document, parse_config_bytes
from bgpspeaker.errors import ConfigError
from bgpspeaker.logs import configure
from bgpspeaker.observe import DEFAULT_LISTEN

__all__ = ["load_config", "main"]

log = structlog.get_logger("bgpspeaker")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _read_prefix(path: str) -> bytes:
    """The file's first bytes, one more than any config can be (a config path pointing at
    /dev/zero or a huge file would otherwise be read for ever); OSError when unreadable."""
    with open(path, "rb") as handle:
        return handle.read(MAX_CONFIG_BYTES + 1)


def _read_bounded(path: str) -> bytes:
    """``_read_prefix``, an unreadable file being a ConfigError."""
    try:
        return _read_prefix(path)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error


def load_config(path: str) -> SpeakerConfig:
    """Read and validate a config file; ConfigError lists every problem (and nothing else
    comes out: a file is data from whoever could write it)."""
    return parse_config_bytes(_read_bounded(path), path)


def _check_config(args: argparse.Namespace) -> int:
    from bgpspeaker.peers import check_password_files

    try:
        config = load_config(args.file)
        check_password_files(config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: valid")
    return EXIT_OK


def _guarded(target: Callable[[], None], name: str, crashed: threading.Event) -> threading.Thread:
    """A daemon thread whose unexpected death brings the whole process down."""

    def body() -> None:
        try:
            target()
        except BaseException:  # a half-alive speaker is worse than a restart
            log.exception("thread_crashed", thread=name)
            crashed.set()

    return threading.Thread(target=body, name=name, daemon=True)


def _password_paths(text: bytes) -> list[str]:
    try:
        data = load_document(text, "config")
    except ConfigError:  # load() reports it
        return []
    peers = data.get("peers") if isinstance(data, dict) else None
    paths = [peer.get("passwordFile") for peer in peers if isinstance(peer, dict)] if isinstance(peers, list) else []
    return [path for path in paths if isinstance(path, str)]


class _ConfigSource:
    """The config file as the daemon sees it: loaded, resolved, and re-read on change.

    A new version is validated and resolved completely before anything uses it; if
    that fails the running config stays and the problems are logged (``valid`` is
    False until a good version arrives)."""

    def __init__(self, path: str, read_secret: Callable[[Any], bytes] | None) -> None:
        self.path = path
        self._read_secret = read_secret
        self.valid = True
        self.last_text: bytes | None = None
        self._parsed_text: bytes | None = None
        self._password_paths: list[str] = []

    def read(self) -> bytes | None:
        """The config file's bytes plus those of the password files it names (so a rotated
        password is noticed like a config change); None when unreadable."""
        try:
            text = _read_prefix(self.path)
        except OSError:
            return None
        if text != self._parsed_text:  # parse only when the file changed, not every poll
            self._parsed_text = text
            self._password_paths = _password_paths(text)
        for path in self._password_paths:
            try:
                text += b"\0" + _read_prefix(path)
            except OSError:
                text += b"\0unreadable:" + path.encode()
        return text

    def load(self) -> tuple[SpeakerConfig, dict[str, Any], Any]:
        """(effective config, peer runtimes, router ID); ConfigError on any problem."""
        from bgpspeaker.peers import resolve_peers

        text = self.read()
        config = load_config(self.path)
        try:
            effective, runtimes, facts = resolve_peers(config, self._read_secret)
        except OSError as error:
            raise ConfigError([f"cannot read this node's routes and addresses: {error}"]) from error
        router_id = config.router_id or facts.primary_ipv4
        if router_id is None:
            raise ConfigError(["routerID: not set, and this node has no global IPv4 address to use"])
        for name, runtime in runtimes.items():
            for problem in runtime.problems:
                log.warning("peer_degraded", peer=name, problem=problem)
        self.last_text = text
        return effective, runtimes, router_id


def _run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as cleanup:  # every way out removes what the daemon wrote
        return _run_daemon(args, cleanup)


def _run_daemon(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    # Imported here so check-config stays fast and works without the kubernetes client.
    from bgpspeaker.bfd.client import BfdClient
    from bgpspeaker.cluster.api import ApiPaths, api_client
    from bgpspeaker.cluster.store import ClusterStore
    from bgpspeaker.cluster.watch import WatchSettings, make_watchers
    from bgpspeaker.exabgp.supervisor import ExabgpSupervisor
    from bgpspeaker.lifecycle import ACK_TIMEOUT_S, shut_down
    from bgpspeaker.peers import PeerRuntime, read_secret_with
    from bgpspeaker.reconciler import Reconciler
    from bgpspeaker.workdir import create_workdir, remove_stale_workdirs, remove_workdir

    node_name = args.node_name or os.environ.get("NODE_NAME", "")
    if not node_name:
        log.error("node_name_missing", hint="pass --node-name or set NODE_NAME (downward API spec.nodeName)")
        return EXIT_USAGE
    try:
        load_config(args.config)  # fail fast, before touching the API server
    except ConfigError as error:
        log.error("config_invalid", path=args.config, problems=error.problems)
        return EXIT_USAGE
    try:
        api = api_client(args.kubeconfig)
    except Exception as error:  # noqa: BLE001  # ConfigException, bad files: one clear line, exit 2
        log.error("kubeconfig_invalid", kubeconfig=args.kubeconfig, error=str(error).strip())
        return EXIT_USAGE
    stop = threading.Event()
    crashed = threading.Event()
    reconciler: Reconciler | None = None

    def mark_dirty() -> None:
        if reconciler is not None:
            reconciler.mark_dirty()

    # The lists are the long pole of a cold start: begin them first, and resolve the
    # peers and start ExaBGP while they load. Nothing is announced before they finish.
    store = ClusterStore(on_change=mark_dirty)
    settings = WatchSettings(inactivity_timeout_s=args.watch_inactivity_timeout)
    watchers = make_watchers(api, store, node_name=node_name, settings=settings, stop=stop)
    # The client's modules (hundreds of thousands of objects) stay for good: keep the
    # cyclic GC from rescanning them while the lists allocate (10k: lists 1.6 -> 1.2 s).
    gc.freeze()
    for watcher in watchers:
        _guarded(watcher.run, f"watch-{watcher.kind}", crashed).start()

    source = _ConfigSource(args.config, read_secret_with(ApiPaths(api)))
    try:
        config, runtimes, router_id = source.load()
    except ConfigError as error:
        log.error("config_invalid", path=args.config, problems=error.problems)
        return EXIT_USAGE

    reload_requested = threading.Event()
    signals_seen: list[int] = []

    interrupted = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals_seen.append(signum)
        if stop.is_set():
            interrupted.set()  # a second signal: cut a drain short
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)

    # ExaBGP's configs hold MD5 keys: a previous run killed with SIGKILL may have left
    # its directory behind; ours goes on every way out.
    remove_stale_workdirs()
    workdir = create_workdir()  # 0700
    cleanup.callback(remove_workdir, workdir)

    def new_session(runtime: PeerRuntime, router: Any) -> ExabgpSupervisor:
        peer_dir = workdir / runtime.peer.name
        peer_dir.mkdir(mode=0o700, exist_ok=True)
        return ExabgpSupervisor(
            runtime,
            router_id=router,
            workdir=peer_dir,
            on_ready=mark_dirty,
            ack_timeout_s=args.exabgp_ack_timeout,
            run_as=args.exabgp_user,
            exabgp_log_level="INFO" if args.log_level == "debug" else "WARNING",
        )

    # The BFD child starts with the first peer that names a bfdProfile.
    bfd = BfdClient(on_change=mark_dirty, never_up_warn_s=args.bfd_never_up_warning)
    reconciler = Reconciler(
        config,
        runtimes,
        router_id=router_id,
        node_name=node_name,
        store=store,
        session_factory=new_session,
        bfd=bfd,
    )
    log.info(
        "speaker_starting",
        version=__version__,
        node=node_name,
        router_id=str(router_id),
        my_asn=config.my_asn,
        peers=[f"{p.name}={p.peer_address} AS{p.peer_asn}" for p in config.peers],
        pid=os.getpid(),
    )
    from bgpspeaker.events import EventRecorder
    from bgpspeaker.observe import Observer, StatusSource

    observer = Observer(
        StatusSource(
            node=node_name,
            reconciler=reconciler,
            store=store,
            watchers=watchers,
            config_valid=lambda: source.valid,
            threads_alive=lambda: not crashed.is_set(),
            bfd=lambda: {peer: status.document() for peer, status in bfd.statuses().items()},
            internal_errors=lambda: {
                "reconciler": reconciler.internal_errors,
                **{f"watch-{w.kind}": w.internal_errors for w in watchers},
            },
        ),
        listen=args.listen,
        status_remote=args.status_remote,
    )
    reconciler.on_pass = observer.reconcile_duration.observe
    try:
        observer.start()
    except OSError as error:
        log.error("http_listen_failed", address=args.listen, error=str(error))
        return EXIT_USAGE
    if args.events:
        recorder = EventRecorder(ApiPaths(api), node=node_name, stop=stop)
        reconciler.journal.on_route = recorder.route
        _guarded(recorder.run, "events", crashed).start()
    reconciler.start_unconditional_sessions()
    reconcile_thread = _guarded(reconciler.run, "reconciler", crashed)
    reconcile_thread.start()

    exit_code = EXIT_OK
    next_check = time.monotonic() + args.config_poll_interval
    while not stop.wait(0.5):
        if crashed.is_set():
            exit_code = EXIT_FAILED
            break
        failed = next((s for s in reconciler.statuses().values() if s.failed is not None), None)
        if failed is not None:
            log.error("exabgp_gave_up", peer=failed.name, error=failed.failed)
            exit_code = EXIT_FAILED
            break
        if reload_requested.is_set() or time.monotonic() >= next_check:
            forced = reload_requested.is_set()
            reload_requested.clear()
            next_check = time.monotonic() + args.config_poll_interval
            if forced or source.read() != source.last_text:
                _reload(source, reconciler, forced=forced)

    started = time.monotonic()
    # A failure leaves by the same path as SIGTERM: with mode keep (graceful restart for
    # rollouts) the routers keep the routes while the kubelet restarts the pod.
    shutdown = reconciler.config.shutdown
    log.info(
        "speaker_stopping",
        signal=signals_seen[0] if signals_seen else None,
        exit_code=exit_code,
        mode=shutdown.mode,
    )
    stop.set()
    reconciler.sessions.hasten(ACK_TIMEOUT_S)  # a pass in flight must not hold the shutdown up
    reconciler.stop()
    reconcile_thread.join(timeout=3.5)
    remaining = shut_down(
        reconciler.sessions,
        reconciler.journal,
        shutdown=shutdown,
        reconciler_stopped=not reconcile_thread.is_alive(),
        interrupted=interrupted,
        started=started,
        bfd_admin_down=bfd.admin_down,
    )
    bfd.stop(linger_s=0.3)  # AdminDown packets go on a little (RFC 5880 6.8.16)
    observer.stop()
    log.info(
        "speaker_stopped",
        unconfirmed_withdraws=remaining,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        exit_code=exit_code,
    )
    return exit_code


def _reload(source: _ConfigSource, reconciler: Any, *, forced: bool) -> None:
    """Re-read the config; hand a valid one to the reconciler, keep the old one otherwise.
    Nothing a file holds may end the running speaker: any failure keeps the old config."""
    try:
        config, runtimes, router_id = source.load()
    except Exception as error:  # noqa: BLE001  # ConfigError, or a bug: either way the running config stays
        problems = (
            error.problems
            if isinstance(error, ConfigError)
            else [f"internal error while loading: {type(error).__name__}: {str(error)[:300]}"]
        )
        try:
            source.last_text = source.read()  # do not log the same broken file every poll
        except Exception:  # noqa: BLE001  # read() of a hostile file must not end the daemon either
            source.last_text = None
        source.valid = False
        log.error("config_reload_failed", path=source.path, problems=problems, kept="running config")
        return
    source.valid = True
    log.info("config_reloading", path=source.path, trigger="sighup" if forced else "file_changed")
    reconciler.request_config(config, runtimes, router_id)


def _status(args: argparse.Namespace) -> int:
    from bgpspeaker.report import fetch_status, format_status

    try:
        document = fetch_status(args.address)
    except OSError as error:
        print(f"cannot reach the speaker at {args.address}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(document, indent=2) if args.output == "json" else format_status(document))
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from bgpspeaker.cluster.api import api_client
    from bgpspeaker.report import explain, format_explain

    namespace, _, name = args.service.partition("/")
    if not namespace or not name:
        print(f"expected NAMESPACE/SERVICE, got {args.service!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    try:
        report = explain(api_client(args.kubeconfig), config, namespace, name, node=args.node)
    except LookupError as error:
        print(str(error), file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(report, indent=2) if args.output == "json" else format_explain(report))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgpspeaker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bgpspeaker {__version__}")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="announce this node's VIPs (the daemon)")
    run.add_argument("--config", required=True, help="SpeakerConfig YAML file")
    run.add_argument("--node-name", default=None, help="this node's name (default: $NODE_NAME)")
    run.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    run.add_argument(
        "--watch-inactivity-timeout",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="restart a watch stream silent this long (API servers send bookmarks every ~60 s)",
    )
    run.add_argument(
        "--exabgp-ack-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="restart ExaBGP when it leaves commands unacknowledged this long",
    )
    run.add_argument(
        "--bfd-never-up-warning",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="warn once (bfd_never_up) when a peer's BFD session has not come up this long",
    )
    run.add_argument(
        "--config-poll-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often to check the config file for changes (SIGHUP re-reads it at once)",
    )
    run.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="/metrics, /healthz, /readyz and /status (default :7473, all addresses)",
    )
    run.add_argument(
        "--exabgp-user",
        default=None,
        metavar="USER|UID[:GID]",
        help="when started as root, run ExaBGP as this user (default nobody); never as root",
    )
    run.add_argument(
        "--status-remote",
        action="store_true",
        help="answer /status to any client (default: only from this node; it names services, peers and ASNs)",
    )
    run.add_argument(
        "--no-events",
        dest="events",
        action="store_false",
        help="do not write Announced/Withdrawn Events on Services",
    )
    run.set_defaults(func=_run)

    status = commands.add_parser("status", help="ask the speaker on this node what it announces, to whom")
    status.add_argument("--address", default="127.0.0.1:7473", metavar="HOST:PORT", help="the speaker's --listen")
    status.add_argument("--output", choices=["text", "json"], default="text")
    status.set_defaults(func=_status)

    explain = commands.add_parser(
        "explain",
        help="run the daemon's decision for one service against the live API server (read-only)",
    )
    explain.add_argument("service", metavar="NAMESPACE/SERVICE")
    explain.add_argument("--node", default=None, help="only this node (default: every node)")
    explain.add_argument("--config", required=True, help="the SpeakerConfig the speakers run with")
    explain.add_argument("--kubeconfig", default=None)
    explain.add_argument("--output", choices=["text", "json"], default="text")
    explain.set_defaults(func=_explain)

    check = commands.add_parser("check-config", help="validate a config file; exit 2 listing every problem")
    check.add_argument("file")
    check.set_defaults(func=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    configure(log_format=args.log_format, level=args.log_level)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


def _entry() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
