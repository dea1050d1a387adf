"""Exceptions that the CLI turns into one clear message and an exit code."""

from __future__ import annotations


class AutopidError(Exception):
    """A runtime failure the user can act on (CLI exit code 1)."""

    exit_code = 1


class ConfigError(AutopidError):
    """A usage or configuration error (CLI exit code 2).

    The message names the file, the key path and what was expected.
    """

    exit_code = 2


class InputError(AutopidError):
    """Bad input data: the message names the file, the tree and the branch."""

    exit_code = 1
