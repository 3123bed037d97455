"""The ``bgpspeaker`` command: ``run`` the daemon, ``check-config``, ``status``, ``explain``.

The operator's texts (``--help``) are ``_DESCRIPTION`` and the parsers' help strings, not
this docstring. This is the only place that exits. Signals only set a flag; the main
thread notices it, withdraws, stops ExaBGP and returns.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from bgpspeaker import __version__
from bgpspeaker.config import MAX_CONFIG_BYTES, SpeakerConfig, load_document, parse_config_bytes, read_prefix
from bgpspeaker.configdiff import config_changes
from bgpspeaker.errors import ConfigError
from bgpspeaker.logs import configure
from bgpspeaker.ports import DEFAULT_METRICS_ADDRESS as DEFAULT_LISTEN
from bgpspeaker.ports import DEFAULT_STATUS_ADDRESS
from bgpspeaker.signals import SignalRelay
from bgpspeaker.threads import guarded

__all__ = ["load_config", "main"]

log = structlog.get_logger("bgpspeaker")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG_PATH = "/etc/bgpspeaker/config.yaml"
"""Where the DaemonSet mounts the ConfigMap's config.yaml."""


def _read_bounded(path: str) -> bytes:
    """``read_prefix``, an unreadable file being a ConfigError."""
    try:
        return read_prefix(path)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error


def load_config(path: str) -> SpeakerConfig:
    """Read and validate a config file; ConfigError lists every problem (and nothing else
    comes out: a file is data from whoever could write it)."""
    return parse_config_bytes(_read_bounded(path), path)


def _check_config(args: argparse.Namespace) -> int:
    from bgpspeaker.config import parse_config
    from bgpspeaker.configfile import find_configs
    from bgpspeaker.peers import check_password_files

    source = "(stdin)" if args.file == "-" else args.file
    try:
        data = sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1) if args.file == "-" else _read_bounded(args.file)
        found = find_configs(data, source)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    if found.other_kinds:
        kinds = collections.Counter(found.other_kinds)
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        print(f"{source}: skipped {len(found.other_kinds)} documents of other kinds ({summary})")
    for note in found.skipped:
        print(f"{source}: {note}")
    problems = list(found.problems)
    for document in found.configs:
        try:
            check_password_files(parse_config(document.data))
        except ConfigError as error:
            problems.extend(f"{document.where}: {p}" if document.where else p for p in error.problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_USAGE
    checked = [d.where for d in found.configs if d.where]
    print(f"{source}: valid" + (f" ({'; '.join(checked)})" if checked else ""))
    return EXIT_OK


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
        self.config_text: bytes | None = None
        """The config file's bytes in force (``/config``; no password bytes)."""

    def read(self) -> bytes | None:
        """The config file's bytes plus those of the password files it names (so a rotated
        password is noticed like a config change); None when unreadable."""
        try:
            text = read_prefix(self.path)
        except OSError:
            return None
        if text != self._parsed_text:  # parse only when the file changed, not every poll
            self._parsed_text = text
            self._password_paths = _password_paths(text)
        for path in self._password_paths:
            try:
                text += b"\0" + read_prefix(path)
            except OSError:
                text += b"\0unreadable:" + path.encode()
        return text

    def load(self) -> tuple[SpeakerConfig, dict[str, Any], Any]:
        """(effective config, peer runtimes, router ID); ConfigError on any problem."""
        from bgpspeaker.peers import resolve_peers

        text = self.read()
        raw = _read_bounded(self.path)
        config = parse_config_bytes(raw, self.path)
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
        self.config_text = raw
        return effective, runtimes, router_id


def _run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as cleanup:  # every way out removes what the daemon wrote
        return _run_daemon(args, cleanup)


def _run_daemon(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    # Imported here so check-config stays fast and works without the kubernetes client.
    # Only what starts ExaBGP comes before the client (bgpspeaker.earlystart).
    from bgpspeaker.earlystart import EarlyStart
    from bgpspeaker.exabgp.supervisor import ExabgpSupervisor
    from bgpspeaker.memory import limit_malloc_arenas
    from bgpspeaker.peers import PeerRuntime
    from bgpspeaker.sessions import Sessions
    from bgpspeaker.workdir import create_workdir, remove_stale_workdirs, remove_workdir

    limit_malloc_arenas()  # before the daemon's threads start (bgpspeaker.memory.MALLOC_ARENAS)
    node_name = args.node_name or os.environ.get("NODE_NAME", "")
    if not node_name:
        log.error("node_name_missing", hint="pass --node-name or set NODE_NAME (downward API spec.nodeName)")
        return EXIT_USAGE
    try:
        first_config = load_config(args.config)  # fail fast, before touching the API server
    except ConfigError as error:
        log.error("config_invalid", path=args.config, problems=error.problems)
        return EXIT_USAGE
    stop = threading.Event()
    crashed = threading.Event()
    reconciler: Reconciler | None = None

    def mark_dirty() -> None:
        if reconciler is not None:
            reconciler.mark_dirty()

    reload_requested = threading.Event()
    wake = threading.Event()
    """Wakes the main loop at once (a signal) instead of at its next 0.5 s tick."""
    signals_seen: list[int] = []

    interrupted = threading.Event()

    def on_signal(signum: int) -> None:  # on the signals thread (bgpspeaker.signals)
        if signum == signal.SIGHUP:
            reload_requested.set()
        else:
            signals_seen.append(signum)
            if stop.is_set():
                interrupted.set()  # a second signal: cut a drain short
            stop.set()
        wake.set()

    # Before any child exists: a SIGTERM during the start leaves by the shutdown path.
    relay = SignalRelay(on_signal, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)).install()
    cleanup.callback(relay.close)

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

    # ExaBGP's own start (~0.2 s) is the long pole of a small cold start: the peers that
    # need neither the API server nor this node's labels start it now, on the other core,
    # while the Kubernetes client is imported and lists. Nothing is announced earlier.
    early = EarlyStart(new_session)
    sessions = Sessions(early.factory)
    cleanup.callback(sessions.stop_all, 2.0)  # every way out stops ExaBGP, then its directory goes
    early.start(first_config, sessions)

    from bgpspeaker.cluster.api import ApiPaths, api_client
    from bgpspeaker.cluster.store import ClusterStore
    from bgpspeaker.cluster.watch import WatchSettings, make_watchers

    try:
        api = api_client(args.kubeconfig)
    except Exception as error:  # noqa: BLE001  # ConfigException, bad files: one clear line, exit 2
        log.error("kubeconfig_invalid", kubeconfig=args.kubeconfig, error=str(error).strip())
        return EXIT_USAGE

    # The lists are the long pole of a larger cold start: begin them first, and resolve
    # the other peers and start their ExaBGP while they load. Nothing is announced before
    # they finish.
    store = ClusterStore(on_change=mark_dirty)
    settings = WatchSettings(inactivity_timeout_s=args.watch_inactivity_timeout)
    watchers = make_watchers(api, store, node_name=node_name, settings=settings, stop=stop)
    # The client's modules (hundreds of thousands of objects) stay for good: keep the
    # cyclic GC from rescanning them while the lists allocate (10k: lists 1.6 -> 1.2 s).
    gc.freeze()
    for watcher in watchers:
        guarded(watcher.run, f"watch-{watcher.kind}", crashed, log).start()
    from bgpspeaker.bfd.client import BfdClient  # the rest while the lists load
    from bgpspeaker.lifecycle import ACK_TIMEOUT_S, shut_down
    from bgpspeaker.peers import read_secret_with
    from bgpspeaker.reconciler import Reconciler
    from bgpspeaker.secretwatch import Rekeyer, SecretWatches

    source = _ConfigSource(args.config, read_secret_with(ApiPaths(api)))
    try:
        config, runtimes, router_id = source.load()
    except ConfigError as error:
        log.error("config_invalid", path=args.config, problems=error.problems)
        return EXIT_USAGE
    # A rotated passwordSecret re-keys its session without SIGHUP (bgpspeaker.secretwatch).
    secret_changed = threading.Event()
    secret_watches = SecretWatches(ApiPaths(api), settings=settings, on_change=secret_changed.set)
    cleanup.callback(secret_watches.stop)
    rekeyer = Rekeyer(secret_watches)
    rekeyer.loaded((config, runtimes, router_id))

    # The BFD child starts with the first peer that names a bfdProfile.
    bfd = BfdClient(on_change=mark_dirty, never_up_warn_s=args.bfd_never_up_warning)
    reconciler = Reconciler(
        config,
        runtimes,
        router_id=router_id,
        node_name=node_name,
        store=store,
        session_factory=early.factory,
        bfd=bfd,
        sessions=sessions,
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
                "watch-secrets": secret_watches.internal_errors,
            },
            config_text=lambda: source.config_text,
        ),
        listen=args.listen,
        status_address=args.status_address,
        status_remote=args.status_remote,
    )
    reconciler.on_pass = observer.reconcile_duration.observe
    try:
        observer.start()
    except OSError as error:
        log.error("http_listen_failed", address=f"{args.listen} {args.status_address}", error=str(error))
        return EXIT_USAGE
    if args.events:
        recorder = EventRecorder(ApiPaths(api), node=node_name, stop=stop)
        reconciler.journal.on_route = recorder.route
        guarded(recorder.run, "events", crashed, log).start()
    reconciler.start_unconditional_sessions()
    reconcile_thread = guarded(reconciler.run, "reconciler", crashed, log)
    reconcile_thread.start()

    exit_code = EXIT_OK
    next_check = time.monotonic() + args.config_poll_interval
    while not stop.is_set():
        wake.wait(0.5)
        wake.clear()
        if stop.is_set():
            break
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
                loaded = _reload(source, reconciler, forced=forced)
                if loaded is not None:
                    rekeyer.loaded(loaded)
                    secret_changed.set()  # compare with what the watchers saw since
        if secret_changed.is_set():
            secret_changed.clear()
            rekeyed = rekeyer.poll()
            if rekeyed is not None:
                reconciler.request_config(*rekeyed)

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


def _reload(source: _ConfigSource, reconciler: Any, *, forced: bool) -> tuple[SpeakerConfig, Any, Any] | None:
    """Re-read the config; hand a valid one to the reconciler (and return it), keep the old
    one otherwise. Nothing a file holds may end the running speaker: any failure keeps the
    old config."""
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
        return None
    source.valid = True
    trigger = "sighup" if forced else "file_changed"
    log.info("config_reloading", path=source.path, trigger=trigger)
    changes = config_changes(reconciler.latest_config, config)
    reconciler.request_config(config, runtimes, router_id)
    log.info("config_reloaded", path=source.path, trigger=trigger, **changes.fields())
    return config, runtimes, router_id


def _status(args: argparse.Namespace) -> int:
    from bgpspeaker.report import fetch_status, format_status

    try:
        document = fetch_status(args.address)
    except (OSError, ValueError) as error:  # refused, timed out, 403/404, not JSON
        print(f"status: no speaker answers at {args.address}: {_reason(error)}{_ON_A_NODE}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(document, indent=2) if args.output == "json" else format_status(document))
    return EXIT_OK


_ON_A_NODE = " (run it in a speaker pod: kubectl -n bgpspeaker-system exec ds/bgpspeaker -- bgpspeaker ...)"


def _reason(error: BaseException) -> str:
    """The innermost readable cause of a connection failure, on one line."""
    cause: Any = error
    while getattr(cause, "reason", None) is not None and not isinstance(cause.reason, str):
        cause = cause.reason  # URLError(ConnectionRefusedError), MaxRetryError(NewConnectionError)
    text = getattr(cause, "strerror", None) or getattr(cause, "reason", None) or str(cause) or type(cause).__name__
    return " ".join(str(text).split())[:300]


def _explain_config(args: argparse.Namespace) -> tuple[SpeakerConfig, str]:
    """The config to explain with, and where it came from: ``--config``; else the speaker on
    this node (``/config`` on its status address); else the default path. ConfigError otherwise."""
    from bgpspeaker.report import fetch_config

    if args.config is not None:
        return load_config(args.config), args.config
    try:
        text = fetch_config(args.address)
    except (OSError, ValueError) as error:
        asked = f"no speaker answers at {args.address} ({_reason(error)})"
    else:
        where = f"the speaker at {args.address}"
        return parse_config_bytes(text, where), where
    if os.path.exists(DEFAULT_CONFIG_PATH):
        return load_config(DEFAULT_CONFIG_PATH), DEFAULT_CONFIG_PATH
    raise ConfigError([f"explain: no config: {asked} and no {DEFAULT_CONFIG_PATH}; pass --config FILE{_ON_A_NODE}"])


def _explain(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    from bgpspeaker.cluster.api import ResponseInvalid, api_client
    from bgpspeaker.report import explain, format_explain

    namespace, _, name = args.service.partition("/")
    if not namespace or not name:
        print(f"expected NAMESPACE/SERVICE, got {args.service!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config, _source = _explain_config(args)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    try:
        api = api_client(args.kubeconfig)
    except (ConfigException, OSError, ValueError, TypeError) as error:  # missing or broken kubeconfig
        where = f"kubeconfig {args.kubeconfig}" if args.kubeconfig else "no kubeconfig"
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        print(
            f"explain: no Kubernetes credentials ({where}: {detail}); in a pod the service account is used,"
            " elsewhere pass --kubeconfig FILE or set KUBECONFIG",
            file=sys.stderr,
        )
        return EXIT_USAGE
    server = api.configuration.host
    try:
        report = explain(api, config, namespace, name, node=args.node)
    except LookupError as error:
        print(str(error), file=sys.stderr)
        return EXIT_FAILED
    except ApiException as error:
        print(f"explain: the API server at {server} answered {error.status} {error.reason}", file=sys.stderr)
        return EXIT_FAILED
    except (HTTPError, OSError, ResponseInvalid) as error:
        print(f"explain: the API server at {server} does not answer: {_reason(error)}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(report, indent=2) if args.output == "json" else format_explain(report))
    return EXIT_OK


def _import_metallb(args: argparse.Namespace) -> int:
    """MetalLB objects (YAML) in, a SpeakerConfig on stdout, a warning per thing not carried."""
    import yaml

    from bgpspeaker.metallb import MAX_INPUT_BYTES, convert, read_documents

    source = "(stdin)" if args.file == "-" else args.file
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(args.file, "rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        conversion = convert(read_documents(data, source))
    except OSError as error:
        print(f"{source}: cannot read: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    for warning in conversion.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(f"# Converted by bgpspeaker import-metallb from {source}\n")
    sys.stdout.write(yaml.safe_dump(conversion.config, sort_keys=False, default_flow_style=None, width=120))
    return EXIT_OK


def _controller(args: argparse.Namespace) -> int:
    from bgpspeaker.controller.run import (
        ControllerOptions,
        default_identity,
        default_lease_namespace,
        run_controller,
    )

    options = ControllerOptions(
        config_path=args.config,
        kubeconfig=args.kubeconfig,
        lease_namespace=args.lease_namespace or default_lease_namespace(),
        identity=default_identity(),
        metrics_address=args.metrics_address,
    )
    return run_controller(options, load_config)


_DESCRIPTION = """\
Announce the VIPs of Kubernetes LoadBalancer Services to your routers over BGP, from the
nodes that should receive their traffic. Runs on every node (DaemonSet, `run`); the
other commands help you check a config and see what a node announces and why."""

_EPILOG = """\
examples:
  bgpspeaker check-config config.yaml        validate a config (or a ConfigMap, or kubectl kustomize output)
  bgpspeaker status                          on a node: sessions and announced prefixes
  bgpspeaker explain default/web             why a Service is or is not announced, per node
docs: README.md (install, config reference), docs/logging.md (log events)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgpspeaker",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bgpspeaker {__version__}")
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="auto (default): readable on a terminal, JSON lines otherwise",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="peer with the routers and announce this node's VIPs (what the DaemonSet runs)",
        description="Peer with the routers in the config and announce the VIPs this node should attract."
        " SIGTERM withdraws (or drains, or keeps: shutdown.mode) and exits; SIGHUP re-reads the config.",
    )
    run.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"SpeakerConfig file (default {DEFAULT_CONFIG_PATH})",
    )
    run.add_argument("--node-name", default=None, help="this node's name (default: $NODE_NAME)")
    run.add_argument(
        "--kubeconfig", default=None, metavar="FILE", help="default: the pod's service account, then ~/.kube/config"
    )
    run.add_argument(
        "--watch-inactivity-timeout",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="reconnect to the API server when it sends nothing for this long (default 90;"
        " API servers send a bookmark every minute)",
    )
    run.add_argument(
        "--exabgp-ack-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="restart a peer's BGP process when it leaves a route unacknowledged this long (default 10)",
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
        help="how often to check the config file for changes (default 2; SIGHUP re-reads it at once)",
    )
    run.add_argument(
        "--metrics-address",
        "--listen",
        dest="listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"/metrics, /healthz and /readyz for Prometheus and the kubelet (default {DEFAULT_LISTEN}: every address)",
    )
    run.add_argument(
        "--status-address",
        default=DEFAULT_STATUS_ADDRESS,
        metavar="HOST:PORT",
        help=f"/status and /config for `bgpspeaker status` and `explain` (default {DEFAULT_STATUS_ADDRESS}:"
        " this node only; they name Services, peers and ASNs)",
    )
    run.add_argument(
        "--exabgp-user",
        default=None,
        metavar="USER|UID[:GID]",
        help="when started as root, run the BGP processes as this user (default nobody; never root)",
    )
    run.add_argument(
        "--status-remote",
        action="store_true",
        help="also answer /status on the metrics address to other hosts (default: only to this node)",
    )
    run.add_argument(
        "--no-events",
        dest="events",
        action="store_false",
        help="do not write Announced/Withdrawn Events on Services",
    )
    run.set_defaults(func=_run)

    status = commands.add_parser(
        "status",
        help="what the speaker on this node announces, to which peers, and their sessions",
        description="Ask the speaker on this node (run it where the speaker runs, e.g. kubectl exec) for its"
        " sessions and announced prefixes.",
    )
    status.add_argument(
        "--address",
        default=DEFAULT_STATUS_ADDRESS,
        metavar="HOST:PORT",
        help=f"the speaker's --status-address (default {DEFAULT_STATUS_ADDRESS})",
    )
    status.add_argument("--output", choices=["text", "json"], default="text")
    status.set_defaults(func=_status)

    explain = commands.add_parser(
        "explain",
        help="why a Service is or is not announced, node by node (read-only)",
        description="Decide, as the speakers do, whether each node announces the Service's VIPs, with the"
        " reason and the attributes per peer. Reads the API server, changes nothing. Without --config:"
        f" the config of the speaker on this node, else {DEFAULT_CONFIG_PATH}.",
    )
    explain.add_argument("service", metavar="NAMESPACE/SERVICE")
    explain.add_argument("--node", default=None, help="only this node (default: every node)")
    explain.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"the SpeakerConfig (default: the one the speaker on this node runs, else {DEFAULT_CONFIG_PATH})",
    )
    explain.add_argument(
        "--address",
        default=DEFAULT_STATUS_ADDRESS,
        metavar="HOST:PORT",
        help=f"where to ask the speaker on this node for its config (default {DEFAULT_STATUS_ADDRESS})",
    )
    explain.add_argument(
        "--kubeconfig", default=None, metavar="FILE", help="default: the pod's service account, then ~/.kube/config"
    )
    explain.add_argument("--output", choices=["text", "json"], default="text")
    explain.set_defaults(func=_explain)

    _add_controller(commands)

    check = commands.add_parser(
        "check-config",
        help="validate a config file; exit 2 listing every problem",
        description="Validate a SpeakerConfig, a ConfigMap holding one (data key config.yaml), or a file of"
        " several documents (e.g. kubectl kustomize deploy/ output; other kinds are skipped with a note)."
        " Exit 0 when valid, else 2 with every problem on stderr. FILE - reads standard input"
        " (kubectl kustomize deploy/ | bgpspeaker check-config -).",
    )
    check.add_argument("file", metavar="FILE|-")
    check.set_defaults(func=_check_config)

    metallb = commands.add_parser(
        "import-metallb",
        help="convert MetalLB's BGP objects (YAML) into a SpeakerConfig on stdout; warnings on stderr",
        description="Reads IPAddressPool, BGPPeer, BGPAdvertisement, Community and BFDProfile objects"
        " (e.g. kubectl get -n metallb-system ipaddresspools,bgppeers,bgpadvertisements,communities,bfdprofiles"
        " -o yaml) and writes the SpeakerConfig that announces the same routes. Exit 0 when converted (with a"
        " warning line per field it cannot carry), 2 when the input cannot be read.",
    )
    metallb.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="YAML file (default: stdin)")
    metallb.set_defaults(func=_import_metallb)
    return parser


def _add_controller(commands: Any) -> None:
    controller = commands.add_parser(
        "controller",
        help="hand out LoadBalancer VIPs from the config's addressPools (a Deployment, 2 replicas)",
        description=(
            "Assign status.loadBalancer.ingress to LoadBalancer Services from the addressPools of the"
            " SpeakerConfig (the speakers' file). Replicas elect a leader through the Lease"
            " bgpspeaker-controller; only the leader writes. Identity: $POD_NAME (else the host name"
            " and a random suffix). SIGTERM releases the Lease, so a standby takes over at once."
        ),
    )
    controller.add_argument("--config", required=True, help="SpeakerConfig YAML file (re-read when it changes)")
    controller.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then ~/.kube/config)"
    )
    controller.add_argument(
        "--lease-namespace",
        default=None,
        metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE, else bgpspeaker-system)",
    )
    controller.add_argument(
        "--metrics-address",
        default=":7474",
        metavar="HOST:PORT",
        help="/metrics, /healthz and /readyz (default :7474, all addresses)",
    )
    controller.set_defaults(func=_controller)


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
