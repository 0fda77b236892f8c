"""Argument types the commands share: argparse calls them on the text of a flag, and reports what they raise."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A count of at least one (iterations, env runners, games, a port): what the flag says, or why not."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value
