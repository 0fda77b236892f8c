"""RLlib's default PPO/APPO modules for uint8 frame stacks: the scaling to floats happens on the module's device.

The lean Atari runner hands out observations as ALE makes them, uint8 stacks of shape
(frames, dim, dim): 4x smaller than float32 frames on the way to the learner, no per-step conversion
in the runner. Here they become what RLlib's CNN encoder was built for: floats in [-1, 1] (the scaling
of RLlib's NormalizedImageEnv) in channels-last layout. The permute is a view: the encoder permutes
back to channels-first before its first convolution, so the only copy is the conversion itself, done
by torch on the learner's GPU, or on the runner's CPU in one batched operation.

RLlib's CNN pads "same" convolutions with a separate ZeroPad2d layer, which copies every activation
once more; where the padding is symmetric the convolution pads itself instead (same result, same
parameter names, so checkpoints and weights move freely between these modules and the stock ones).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module import DefaultAPPOTorchRLModule
from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from torch import nn


def model_space(space: gym.spaces.Box) -> gym.spaces.Box:
    """(frames, h, w) uint8 -> (h, w, frames) float32 in [-1, 1]: the space the encoder is built for."""
    frames, h, w = space.shape
    return gym.spaces.Box(-1.0, 1.0, (h, w, frames), np.float32)


def scaled(batch: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of `batch` with uint8 stacks as channels-last floats; float observations pass through."""
    obs = batch[Columns.OBS]
    if obs.dtype != torch.uint8:
        return batch
    out = dict(batch)
    out[Columns.OBS] = obs.float().mul_(1.0 / 128.0).sub_(1.0).permute(0, 2, 3, 1)  # one new tensor, not three
    return out


def fuse_padding(module: nn.Module) -> int:
    """Folds each symmetric ZeroPad2d into the Conv2d after it; returns how many were folded."""
    folded = 0
    for child in module.children():
        if isinstance(child, nn.Sequential):
            for i in range(len(child) - 1):
                pad, conv = child[i], child[i + 1]
                if isinstance(pad, nn.ZeroPad2d) and isinstance(conv, nn.Conv2d) and conv.padding == (0, 0):
                    left, right, top, bottom = pad.padding
                    if left == right == top == bottom:
                        conv.padding = (top, left)
                        child[i] = nn.Identity()
                        folded += 1
        folded += fuse_padding(child)
    return folded


class FrameStackCatalog(PPOCatalog):
    """Builds the default PPO encoder and heads for the float, channels-last view of the stacks."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, model_config_dict: dict) -> None:
        super().__init__(model_space(observation_space), action_space, model_config_dict)  # type: ignore[arg-type]


class _FrameStackInputs:
    """Scales uint8 stacks before each of the default module's forward passes; comes first among the bases."""

    encoder: nn.Module

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        fuse_padding(self.encoder)  # before APPO's make_target_networks copies the encoder

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return super()._forward(scaled(batch), **kwargs)  # type: ignore[misc]

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return super()._forward_train(scaled(batch), **kwargs)  # type: ignore[misc]

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
        return super().compute_values(scaled(batch), embeddings)  # type: ignore[misc]


class FrameStackPPOModule(_FrameStackInputs, DefaultPPOTorchRLModule):
    """RLlib's default PPO module, fed uint8 frame stacks."""


class FrameStackAPPOModule(_FrameStackInputs, DefaultAPPOTorchRLModule):
    """RLlib's default APPO module (with its target networks), fed uint8 frame stacks."""

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return super().forward_target(scaled(batch))


MODULES = {"APPO": FrameStackAPPOModule, "PPO": FrameStackPPOModule}
