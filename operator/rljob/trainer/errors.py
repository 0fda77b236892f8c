"""Errors that end a run with a known exit code instead of a traceback.

A configuration error (bad recipe argument, missing script, env id without a ROM) can never be
fixed by retrying, so it maps to constants.EXIT_CONFIG_ERROR; the operator reads that exit code
and does not spend the job's backoffLimit on it.
"""
from __future__ import annotations

from ..api.constants import EXIT_CONFIG_ERROR, EXIT_COORDINATION_TIMEOUT

# Shell convention 128 + signal number: the run was interrupted, not failed.
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM (pod deleted or suspended)


class TrainerError(Exception):
    """An expected failure: `lines` are printed as they are, and `exit_code` ends the process."""

    exit_code: int = 1

    def __init__(self, *lines: str) -> None:
        self.lines = [line for line in lines if line]
        super().__init__("; ".join(self.lines))


class ConfigError(TrainerError):
    """The job cannot run as configured; retrying cannot help."""

    exit_code = EXIT_CONFIG_ERROR


class CoordinationTimeout(TrainerError):
    """Not every expected worker joined the Ray cluster before the deadline."""

    exit_code = EXIT_COORDINATION_TIMEOUT
