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

Three settings in the model config (MODEL_KEYS), set by the recipe:
- precision: the forward and backward passes in bfloat16 under torch's autocast where the hardware has
  bfloat16 arithmetic (AVX-512 BF16 or AMX on a CPU, a GPU that supports it); weights, losses and the
  optimizer's state stay float32, so only the convolutions and matrix products change precision.
- channels-last: the convolutions' weights and inputs in NHWC memory, which oneDNN's CPU kernels
  prefer (the stacks arrive as NCHW uint8; one copy of the uint8 stack reorders them).
- initialisation: orthogonal weights (gain sqrt 2, zero biases), with a policy head of gain 0.01 so
  the first policy is close to uniform whatever the seed, and a value head of gain 1: the
  initialisation of the reference Atari PPO implementations.
"""
from __future__ import annotations

import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module import DefaultAPPOTorchRLModule
from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from torch import nn

from .model_settings import CHANNELS_LAST_KEY, INIT_KEY, PRECISION_KEY, cpu_has_bf16

HIDDEN_GAIN, POLICY_GAIN, VALUE_GAIN = math.sqrt(2.0), 0.01, 1.0
VALUE_PASS_CHUNK = 256  # observations per forward pass of the full-batch value pass


def bf16_autocast(precision: str, device_type: str) -> bool:
    """Whether forward passes on a device of this type run under bfloat16 autocast for the configured precision."""
    if precision == "float32" or device_type not in ("cpu", "cuda"):
        return False
    if precision == "bfloat16":
        return True
    return cpu_has_bf16() if device_type == "cpu" else torch.cuda.is_bf16_supported()


def _float32(value: Any) -> Any:
    """Outputs leave the autocast region as float32: the losses, distributions and GAE see full precision."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, dict):
        return {k: _float32(v) for k, v in value.items()}
    return value


def initialise(module: nn.Module, heads: dict[nn.Module, float]) -> None:
    """Orthogonal weights and zero biases everywhere; each head's last linear layer with its own gain."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.orthogonal_(layer.weight, HIDDEN_GAIN)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    for head, gain in heads.items():
        last = [layer for layer in head.modules() if isinstance(layer, nn.Linear)][-1]
        nn.init.orthogonal_(last.weight, gain)


def model_space(space: gym.spaces.Box) -> gym.spaces.Box:
    """(frames, h, w) uint8 -> (h, w, frames) float32 in [-1, 1]: the space the encoder is built for."""
    frames, h, w = space.shape
    return gym.spaces.Box(-1.0, 1.0, (h, w, frames), np.float32)


def scaled(batch: dict[str, Any], channels_last: bool = False) -> dict[str, Any]:
    """A shallow copy of `batch` with uint8 stacks as (n, h, w, frames) floats; float observations pass through.

    `channels_last`: the floats are laid out NHWC in memory too, so that the encoder's permute back to
    (n, frames, h, w) yields a channels-last tensor; otherwise the permute is a view of NCHW memory.
    """
    obs = batch[Columns.OBS]
    if obs.dtype != torch.uint8:
        return batch
    out = dict(batch)
    stacks = obs.permute(0, 2, 3, 1)
    if channels_last:
        stacks = stacks.contiguous()  # a copy of the uint8 stack: a quarter of the floats' bytes
    out[Columns.OBS] = stacks.float().mul_(1.0 / 128.0).sub_(1.0)  # one new tensor, not three
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
    """Scales uint8 stacks before each of the default module's forward passes; comes first among the bases.

    Also where the model-config settings above take effect, and where the time of the full-batch value pass
    (GAE's, the one forward pass outside the minibatch updates) is counted for the learner's timers.
    """

    encoder: nn.Module
    pi: nn.Module
    vf: nn.Module
    model_config: dict[str, Any]

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        fuse_padding(self.encoder)  # before APPO's make_target_networks copies the encoder
        config = self.model_config if isinstance(self.model_config, dict) else {}
        self.precision = str(config.get(PRECISION_KEY, "float32"))
        self.channels_last = bool(config.get(CHANNELS_LAST_KEY, False))
        if config.get(INIT_KEY, "default") == "orthogonal":
            initialise(self, {self.pi: POLICY_GAIN, self.vf: VALUE_GAIN})
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self.value_pass_s = 0.0
        self._bf16: dict[str, bool] = {}  # by device type, decided at the first forward pass there

    def _autocast(self, batch: dict[str, Any]) -> Any:
        obs = batch[Columns.OBS]
        device_type = obs.device.type if isinstance(obs, torch.Tensor) else "cpu"
        enabled = self._bf16.get(device_type)
        if enabled is None:
            enabled = self._bf16[device_type] = bf16_autocast(self.precision, device_type)
        return torch.autocast(device_type if device_type in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16,
                              enabled=enabled)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with self._autocast(batch):
            out = super()._forward(scaled(batch, self.channels_last), **kwargs)  # type: ignore[misc]
        return _float32(out)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with self._autocast(batch):
            out = super()._forward_train(scaled(batch, self.channels_last), **kwargs)  # type: ignore[misc]
        return _float32(out)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
        """The loss passes the encoder's embeddings (nothing to scale, no second encoder pass).

        A call without them is a value pass outside the loss (GAE's over the whole train batch, whose
        values RLlib turns into numpy right away): no autograd graph is built for it, and its time is
        counted.
        """
        if embeddings is not None:
            with self._autocast(batch):
                return _float32(super().compute_values(batch, embeddings))  # type: ignore[misc]
        started = time.perf_counter()
        obs = batch[Columns.OBS]
        compute = super().compute_values  # type: ignore[misc]
        with torch.no_grad(), self._autocast(batch):
            # In chunks: the whole train batch as floats is hundreds of megabytes, a chunk stays in cache.
            chunks = [_float32(compute(scaled({Columns.OBS: obs[i : i + VALUE_PASS_CHUNK]}, self.channels_last)))
                      for i in range(0, len(obs), VALUE_PASS_CHUNK)]
            values = torch.cat(chunks) if chunks else _float32(compute(scaled(batch, self.channels_last)))
        self.value_pass_s += time.perf_counter() - started
        return values

    def take_value_pass_seconds(self) -> float:
        """Seconds spent in full-batch value passes since the last call (the learner logs them per iteration)."""
        seconds, self.value_pass_s = self.value_pass_s, 0.0
        return seconds


class FrameStackPPOModule(_FrameStackInputs, DefaultPPOTorchRLModule):
    """RLlib's default PPO module, fed uint8 frame stacks."""


class FrameStackAPPOModule(_FrameStackInputs, DefaultAPPOTorchRLModule):
    """RLlib's default APPO module (with its target networks), fed uint8 frame stacks."""

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        with self._autocast(batch):
            out = super().forward_target(scaled(batch, self.channels_last))
        return _float32(out)

