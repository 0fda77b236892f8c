"""The frame-stack modules: RLlib's default PPO/APPO networks, fed uint8 stacks, with padding folded into convs."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rljob.trainer.recipes.pong import RECIPE
from rljob.trainer.sizing import ResourcePlan

STACKS = gym.spaces.Box(0, 255, (4, 64, 64), np.uint8)
FLOATS = gym.spaces.Box(-1.0, 1.0, (64, 64, 4), np.float32)
ACTIONS = gym.spaces.Discrete(6)


def _module(args: list[str], space: gym.Space, inference_only: bool = False) -> Any:
    config = RECIPE.build_config(RECIPE.parse_args(args), ResourcePlan(0, 1.0, 1, 0))
    spec = config.get_rl_module_spec(spaces={"default_policy": (space, ACTIONS)}, inference_only=inference_only)
    return spec.build()


def test_scaled_turns_uint8_stacks_into_channels_last_floats() -> None:
    from ray.rllib.core.columns import Columns

    from rljob.trainer.recipes.atari_module import scaled

    obs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 4, 64, 64), dtype=np.uint8))
    out = scaled({Columns.OBS: obs, "other": 1})
    expected = np.moveaxis(obs.numpy().astype(np.float32) / 128.0 - 1.0, 1, -1)
    np.testing.assert_allclose(out[Columns.OBS].numpy(), expected, rtol=0, atol=1e-6)
    assert out["other"] == 1 and out[Columns.OBS].shape == (3, 64, 64, 4)
    floats = {Columns.OBS: torch.zeros(2, 64, 64, 4)}
    assert scaled(floats) is floats  # already scaled: passes through untouched


@pytest.mark.parametrize("algorithm", ["APPO", "PPO"])
def test_same_outputs_and_parameter_names_as_the_stock_module(algorithm: str) -> None:
    """Weights move between the stock module (float frames) and this one; outputs agree on the same pixels."""
    from ray.rllib.core.columns import Columns

    torch.manual_seed(0)
    lean = _module(["--algorithm", algorithm], STACKS)
    stock = _module(["--algorithm", algorithm, "--env-runner", "stock"], FLOATS)
    assert sorted(lean.state_dict()) == sorted(stock.state_dict())
    stock.load_state_dict(lean.state_dict())
    pixels = np.random.default_rng(1).integers(0, 256, (5, 4, 64, 64), dtype=np.uint8)
    with torch.no_grad():
        a = lean.forward_train({Columns.OBS: torch.from_numpy(pixels)})
        b = stock.forward_train({Columns.OBS: torch.from_numpy(np.moveaxis(pixels, 1, -1) / 128.0 - 1.0).float()})
        va = lean.compute_values({Columns.OBS: torch.from_numpy(pixels)})
        vb = stock.compute_values({Columns.OBS: torch.from_numpy(np.moveaxis(pixels, 1, -1) / 128.0 - 1.0).float()})
    torch.testing.assert_close(a[Columns.ACTION_DIST_INPUTS], b[Columns.ACTION_DIST_INPUTS], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(va, vb, rtol=1e-4, atol=1e-5)
    if algorithm == "APPO":
        lean.make_target_networks()
        out = lean.forward_target({Columns.OBS: torch.from_numpy(pixels)})
        torch.testing.assert_close(next(iter(out.values())), a[Columns.ACTION_DIST_INPUTS], rtol=1e-4, atol=1e-5)


def test_symmetric_padding_is_folded_into_the_convolutions() -> None:
    from torch import nn

    module = _module([], STACKS)
    layers = list(module.encoder.modules())
    assert not any(isinstance(m, nn.ZeroPad2d) for m in layers)
    assert [m.padding for m in layers if isinstance(m, nn.Conv2d)] == [(1, 1)] * 4  # "pong": 4x4 kernels, stride 2
