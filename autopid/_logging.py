"""One library logger, routed through tqdm so log lines do not break progress bars."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

_ROOT = "autopid"


class _TqdmHandler(logging.Handler):
    # sys.stderr is looked up on every record: a stream captured at set-up time may be
    # closed later (pytest's capture, a redirected CLI run in the same process).
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def get_logger(name: str) -> logging.Logger:
    """Return a logger below the ``autopid`` root logger."""
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def set_verbosity(level: int) -> None:
    """Set the level of autopid's logging (``logging.INFO`` by default in the CLI)."""
    root = logging.getLogger(_ROOT)
    if not any(isinstance(h, _TqdmHandler) for h in root.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("[autopid] %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)


def progress_enabled() -> bool:
    """Progress bars follow verbosity (hidden with --quiet) and are drawn on a terminal only:
    in a log file their redraws would be one long line of noise."""
    if logging.getLogger(_ROOT).getEffectiveLevel() > logging.INFO:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
