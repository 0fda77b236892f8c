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
    lean = _module(["--algorithm", algorithm, "--precision", "float32"], STACKS)
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


def test_channels_last_scaling_gives_the_same_values_in_nhwc_memory() -> None:
    from ray.rllib.core.columns import Columns

    from rljob.trainer.recipes.atari_module import scaled

    obs = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 4, 64, 64), dtype=np.uint8))
    plain, nhwc = scaled({Columns.OBS: obs})[Columns.OBS], scaled({Columns.OBS: obs}, channels_last=True)[Columns.OBS]
    torch.testing.assert_close(plain, nhwc, rtol=0, atol=0)
    assert nhwc.is_contiguous() and not plain.is_contiguous()
    # What the encoder makes of it: NCHW in shape, channels-last in memory.
    assert nhwc.permute(0, 3, 1, 2).is_contiguous(memory_format=torch.channels_last)


def test_bfloat16_autocast_runs_the_network_in_bfloat16_and_returns_float32() -> None:
    from ray.rllib.core.columns import Columns

    torch.manual_seed(0)
    full = _module(["--precision", "float32", "--model", "small"], STACKS)
    half = _module(["--precision", "bfloat16", "--model", "small"], STACKS)
    half.load_state_dict(full.state_dict())
    seen: list[torch.dtype] = []
    conv = next(m for m in half.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    pixels = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (8, 4, 64, 64), dtype=np.uint8))
    a = full.forward_train({Columns.OBS: pixels})
    b = half.forward_train({Columns.OBS: pixels})
    assert seen == [torch.bfloat16]
    assert b[Columns.ACTION_DIST_INPUTS].dtype == b[Columns.EMBEDDINGS].dtype == torch.float32
    torch.testing.assert_close(b[Columns.ACTION_DIST_INPUTS], a[Columns.ACTION_DIST_INPUTS], rtol=0.05, atol=0.02)
    # Gradients reach the float32 weights through the bfloat16 passes.
    b[Columns.ACTION_DIST_INPUTS].sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32 and conv.weight.dtype == torch.float32


def test_bfloat16_is_used_only_where_the_cpu_has_it() -> None:
    from rljob.trainer.recipes.atari_module import bf16_autocast
    from rljob.trainer.recipes.model_settings import cpu_has_bf16

    assert cpu_has_bf16("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_bf16("flags\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_bf16("flags\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_has_bf16("")
    assert bf16_autocast("auto", "cpu") == cpu_has_bf16()
    assert bf16_autocast("bfloat16", "cpu") and not bf16_autocast("float32", "cpu")
    assert not bf16_autocast("auto", "mps")


@pytest.mark.parametrize("seed", range(3))
def test_orthogonal_initialisation_starts_near_the_uniform_policy(seed: int) -> None:
    from ray.rllib.core.columns import Columns
    from torch import nn

    torch.manual_seed(seed)
    module = _module(["--precision", "float32", "--model", "small"], STACKS)
    policy = [m for m in module.pi.modules() if isinstance(m, nn.Linear)][-1]
    value = [m for m in module.vf.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.linalg.matrix_norm(policy.weight, 2).item() == pytest.approx(0.01, rel=1e-3)
    assert torch.linalg.matrix_norm(value.weight, 2).item() == pytest.approx(1.0, rel=1e-3)
    conv = next(m for m in module.encoder.modules() if isinstance(m, nn.Conv2d))
    rows = conv.weight.reshape(conv.out_channels, -1)
    torch.testing.assert_close(rows @ rows.T, 2.0 * torch.eye(conv.out_channels), rtol=0, atol=1e-4)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    pixels = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (16, 4, 64, 64), dtype=np.uint8))
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: pixels})[Columns.ACTION_DIST_INPUTS]
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    assert float(entropy.min()) > np.log(6) - 0.01


def test_rllibs_initialisation_stays_selectable() -> None:
    from torch import nn

    torch.manual_seed(0)
    module = _module(["--precision", "float32", "--init", "default"], STACKS)
    policy = [m for m in module.pi.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.linalg.matrix_norm(policy.weight, 2).item() > 0.05


def test_the_value_pass_is_chunked_graph_free_timed_and_equal_to_the_losss() -> None:
    from ray.rllib.core.columns import Columns

    from rljob.trainer.recipes.atari_module import VALUE_PASS_CHUNK

    module = _module(["--precision", "float32", "--model", "small", "--algorithm", "PPO"], STACKS)
    n = 2 * VALUE_PASS_CHUNK + 17
    pixels = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (n, 4, 64, 64), dtype=np.uint8))
    assert module.take_value_pass_seconds() == 0.0
    values = module.compute_values({Columns.OBS: pixels})
    assert values.shape == (n,) and not values.requires_grad
    assert module.take_value_pass_seconds() > 0.0 and module.take_value_pass_seconds() == 0.0
    out = module.forward_train({Columns.OBS: pixels})
    in_loss = module.compute_values({Columns.OBS: pixels}, embeddings=out[Columns.EMBEDDINGS])
    assert in_loss.requires_grad  # the loss's call keeps its graph
    assert module.take_value_pass_seconds() == 0.0  # and is not the value pass
    torch.testing.assert_close(values, in_loss.detach(), rtol=1e-4, atol=1e-5)
