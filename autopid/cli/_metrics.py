"""Command-line options for the Prometheus endpoint, shared by long-running commands."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from autopid.errors import ConfigError


def add_metrics_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metrics")
    g.add_argument("--metrics-port", type=int, default=_env_port(), metavar="PORT",
                   help="serve Prometheus metrics on PORT (0: any free port; default: $AUTOPID_METRICS_PORT, "
                   "else off)")
    g.add_argument("--metrics-host", default="127.0.0.1",
                   help="address to bind the metrics endpoint to (default: 127.0.0.1)")
    g.add_argument("--metrics-linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep serving metrics this long after the work ends, for a last scrape (default: 0)")


def _env_port() -> int | None:
    raw = os.environ.get("AUTOPID_METRICS_PORT")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"AUTOPID_METRICS_PORT must be a port number, got {raw!r}") from None


@contextmanager
def metrics_endpoint(args: argparse.Namespace) -> Iterator[None]:
    """Serve ``/metrics`` for the duration of the command when asked to; the port is printed."""
    if args.metrics_port is None:
        yield
        return
    from autopid.monitoring import serve

    server = serve(args.metrics_port, args.metrics_host)
    print(f"metrics: {server.url}", flush=True)
    try:
        yield
        if args.metrics_linger > 0:
            time.sleep(args.metrics_linger)
    finally:
        server.close()
