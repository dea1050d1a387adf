"""The ``autopid`` command.

Exit codes: 0 success, 2 usage or configuration error, 1 runtime failure. Errors print
one message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from autopid import __version__
from autopid._logging import get_logger, set_verbosity
from autopid.errors import AutopidError

_log = get_logger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"autopid: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from autopid.cli import benchmark, models, predict, preprocess, report, retrain, scheduler, search, simulate, train

    # the output options work before or after the command: the command's copies default to
    # SUPPRESS so that they never overwrite what was given before it
    common = argparse.ArgumentParser(add_help=False)
    _output_options(common, argparse.SUPPRESS)
    parser = _Parser(
        prog="autopid",
        description="Automated ML particle identification: simulate, preprocess, train, search, publish. "
        "Output options (-v, -q, --debug) go before or after the command.",
    )
    parser.add_argument("--version", action="version", version=f"autopid {__version__}")
    _output_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (simulate, preprocess, train, search, models, predict, report, retrain, scheduler, benchmark):
        module.register(sub, common)
    return parser


def _output_options(p: argparse.ArgumentParser, default: object) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="count", default=0 if default is None else default,
                   help="more log output (for search: Ray's and Tune's logs on the console too)")
    g.add_argument("-q", "--quiet", action="store_true", default=False if default is None else default,
                   help="warnings and errors only, no progress bars")
    g.add_argument("--debug", action="store_true", default=False if default is None else default,
                   help="show the traceback of an error")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    set_verbosity(level)
    try:
        return int(args.func(args) or 0)
    except AutopidError as exc:
        if args.debug:
            raise
        print(f"autopid: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("autopid: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unexpected failure: still one line unless --debug
        if args.debug:
            raise
        print(f"autopid: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
