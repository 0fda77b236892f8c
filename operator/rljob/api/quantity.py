"""Kubernetes resource quantities, parsed exactly (Decimal), for sizing Ray from the pod's resources."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# The grammar Kubernetes accepts (a subset suffices: no exponent-with-suffix combinations).
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_RE = re.compile(QUANTITY_PATTERN)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}


def parse_quantity(value: str | int | float) -> Decimal:
    """Returns the quantity's value in base units; raises ValueError for anything Kubernetes would reject.

    Whitespace too: the API server's pattern refuses " 4" and "4\n" (its $ is the end of the text, where Python's
    also matches before a final newline), so a manifest with one must not pass `rljob run` and `rljob render`."""
    text = str(value)
    if not _RE.fullmatch(text):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 1.5Gi, 512Mi)")
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * factor
    if text[-1] in _DECIMAL:  # a final E is the exa suffix (1E); an exponent ends in a digit (1e3, 1E3)
        return Decimal(text[:-1]) * _DECIMAL[text[-1]]
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already rejects these
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc
