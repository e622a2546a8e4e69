"""Exceptions that carry a message meant for the user (file, column or key, and what was expected),
and warnings: input that still trains but may not mean what the user thinks."""

import sys


class RankerError(Exception):
    """Base of ranker's user-facing errors; the CLI prints the message without a traceback."""


class ConfigError(RankerError):
    """A config key is unknown, misspelled, of the wrong type or inconsistent."""


class DataError(RankerError):
    """Input data is missing, malformed or inconsistent with the config."""


def warn(message: str) -> None:
    """One ``warning: …`` line on stderr (training goes on)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
