"""Prometheus metrics of every long-running part of autopid.

Metrics live in :data:`autopid.monitoring.metrics.REGISTRY` (not the client's global
registry, so that a push to a Pushgateway carries only autopid's series). Nothing is
started on import: :func:`serve` starts the ``/metrics`` endpoint, :func:`push` pushes once.
"""

from autopid.monitoring.metrics import REGISTRY, metric_names
from autopid.monitoring.server import MetricsServer, push, serve

__all__ = ["REGISTRY", "MetricsServer", "metric_names", "push", "serve"]
