"""`rljob recipes`: a user finds every built-in recipe and the args it takes without reading source."""
from __future__ import annotations

import pytest

from rljob.api.models import RECIPES
from rljob.cli import main


def test_lists_every_recipe_with_its_algorithm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[: len(RECIPES)]] == [["pong", "APPO"], ["cartpole", "PPO"]]


def test_prints_a_recipes_args_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "pong"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spec.entrypoint.args of recipe pong (APPO)")
    for flag in ("--stop-reward", "--vectorize {ale,async,sync}", "--cpus-per-env-runner", "--num-env-runners"):
        assert flag in out
    assert "(default: 4)" in out  # --framestack
    assert "(default: None)" not in out  # run-time defaults are described, not shown as None


def test_unknown_recipe_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "atari"]) == 2
    assert capsys.readouterr().err.strip() == "rljob recipes: unknown recipe 'atari' (choose from pong, cartpole)"
