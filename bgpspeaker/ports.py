"""The daemon's HTTP addresses by default (``bgpspeaker.observe`` serves them).

Apart from ``observe`` so that the command line can name them without importing
prometheus_client and the HTTP server (~30 ms of CPU before ExaBGP could start, and
in every ``check-config``, ``status`` and ``explain``). Why these ports: ``observe``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_METRICS_ADDRESS", "DEFAULT_STATUS_ADDRESS"]

DEFAULT_METRICS_ADDRESS = ":9479"
"""Every address (the node's, on the host network): Prometheus and the kubelet's probes."""
DEFAULT_STATUS_ADDRESS = "127.0.0.1:9480"
"""Loopback: ``bgpspeaker status`` and ``explain`` run on the node (``kubectl exec``)."""
