"""The argument types the commands share."""
from __future__ import annotations

import argparse

import pytest

from rljob.cli.arguments import positive_int


@pytest.mark.parametrize(("text", "value", "problem"), [
    ("1", 1, None),
    ("20", 20, None),
    ("0", None, "must be at least 1, got 0"),
    ("-3", None, "must be at least 1, got -3"),
    ("2.5", None, "not a whole number: '2.5'"),
    ("many", None, "not a whole number: 'many'"),
])
def test_a_count_is_a_whole_number_of_at_least_one(text: str, value: int | None, problem: str | None) -> None:
    if problem is None:
        assert positive_int(text) == value
        return
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        positive_int(text)
    assert str(raised.value) == problem
