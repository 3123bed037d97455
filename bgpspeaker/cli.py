"""The ``bgpspeaker`` command: ``run`` the daemon, ``check-config`` a file.

This is the only place that exits. Signals only set a flag; the main thread notices
it, withdraws, stops ExaBGP and returns.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
import yaml

from bgpspeaker import __version__
from bgpspeaker.config import SpeakerConfig, parse_config
from bgpspeaker.decision import Reason
from bgpspeaker.errors import ConfigError
from bgpspeaker.logs import configure

__all__ = ["load_config", "main"]

log = structlog.get_logger("bgpspeaker")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SHUTDOWN_BUDGET_S = 8.0
"""SIGTERM to exit: under the 10 s the kubelet and our promise allow."""


def load_config(path: str) -> SpeakerConfig:
    """Read and validate a config file; ConfigError lists every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}".replace("\n", " ")]) from error
    return parse_config(data)


def _check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
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


def _run(args: argparse.Namespace) -> int:
    # Imported here so check-config stays fast and works without the kubernetes client.
    from bgpspeaker.exabgp import ExabgpSupervisor
    from bgpspeaker.kube import ClusterStore, WatchSettings, api_client, make_watchers
    from bgpspeaker.netinfo import primary_ipv4
    from bgpspeaker.reconciler import Reconciler

    try:
        config = load_config(args.config)
    except ConfigError as error:
        log.error("config_invalid", path=args.config, problems=error.problems)
        return EXIT_USAGE
    node_name = args.node_name or os.environ.get("NODE_NAME", "")
    if not node_name:
        log.error("node_name_missing", hint="pass --node-name or set NODE_NAME (downward API spec.nodeName)")
        return EXIT_USAGE
    router_id = config.router_id or primary_ipv4()
    if router_id is None:
        log.error("router_id_missing", hint="set routerID: this node has no global IPv4 address")
        return EXIT_USAGE

    stop = threading.Event()
    crashed = threading.Event()
    signals_seen: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals_seen.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    workdir = Path(tempfile.mkdtemp(prefix="bgpspeaker-"))  # 0700
    reconciler: Reconciler | None = None

    def mark_dirty() -> None:
        if reconciler is not None:
            reconciler.mark_dirty()

    store = ClusterStore(on_change=mark_dirty)
    exabgp = ExabgpSupervisor(
        config, router_id=router_id, workdir=workdir, on_ready=mark_dirty, ack_timeout_s=args.exabgp_ack_timeout
    )
    reconciler = Reconciler(config, node_name=node_name, store=store, exabgp=exabgp)
    settings = WatchSettings(inactivity_timeout_s=args.watch_inactivity_timeout)
    watchers = make_watchers(api_client(args.kubeconfig), store, node_name=node_name, settings=settings, stop=stop)
    log.info(
        "speaker_starting",
        version=__version__,
        node=node_name,
        router_id=str(router_id),
        my_asn=config.my_asn,
        peers=[f"{p.name}={p.peer_address} AS{p.peer_asn}" for p in config.peers],
        pid=os.getpid(),
    )
    exabgp.start()
    reconcile_thread = _guarded(reconciler.run, "reconciler", crashed)
    reconcile_thread.start()
    for watcher in watchers:
        _guarded(watcher.run, f"watch-{watcher.kind}", crashed).start()

    exit_code = EXIT_OK
    while not stop.wait(0.2):
        if crashed.is_set():
            exit_code = EXIT_FAILED
            break
        if exabgp.failed is not None:
            log.error("exabgp_gave_up", error=str(exabgp.failed))
            exit_code = EXIT_FAILED
            break

    started = time.monotonic()
    log.info("speaker_stopping", signal=signals_seen[0] if signals_seen else None, exit_code=exit_code)
    stop.set()
    exabgp.ack_timeout_s = min(exabgp.ack_timeout_s, 3.0)
    reconciler.stop()
    reconcile_thread.join(timeout=3.5)
    if reconcile_thread.is_alive():
        # Still inside a command: a second writer would race it. Stopping ExaBGP
        # closes the sessions, and the routers drop the routes with them.
        log.error("shutdown_withdraw_skipped", reason="reconciler_busy")
        remaining = len(reconciler.acknowledged)
    else:
        remaining = reconciler.withdraw_all(Reason.SHUTDOWN, timeout_s=3.0)
    exabgp.stop(timeout_s=max(1.0, SHUTDOWN_BUDGET_S - (time.monotonic() - started) - 1.0))
    shutil.rmtree(workdir, ignore_errors=True)
    log.info(
        "speaker_stopped",
        unconfirmed_withdraws=remaining,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        exit_code=exit_code,
    )
    return exit_code


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
    run.set_defaults(func=_run)

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
