"""The ``/metrics`` endpoint and the Pushgateway push."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopid._logging import get_logger
from autopid.errors import AutopidError, ConfigError
from autopid.monitoring.metrics import REGISTRY

_log = get_logger(__name__)
DEFAULT_HOST = "127.0.0.1"


@dataclass
class MetricsServer:
    host: str
    port: int
    _server: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(port: int, host: str = DEFAULT_HOST) -> MetricsServer:
    """Serve autopid's metrics on ``host:port`` from a daemon thread (port 0: any free port)."""
    from prometheus_client import start_http_server

    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-port must be 0-65535, got {port}")
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise AutopidError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    out = MetricsServer(host, int(server.server_port), server)
    _log.info("metrics on %s", out.url)
    return out


def push(gateway: str, job: str, grouping: dict[str, str] | None = None) -> None:
    """Push every autopid metric to a Prometheus Pushgateway (for short batch runs).
    A gateway that cannot be reached is logged, not raised: the run itself succeeded."""
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(gateway, job=job, registry=REGISTRY, grouping_key=grouping or {}, timeout=10)
    except OSError as exc:
        _log.warning("could not push metrics to %s: %s", gateway, exc)
    else:
        _log.info("pushed metrics to %s (job %s)", gateway, job)
