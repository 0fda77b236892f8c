"""A trained policy as a plain torch network, rebuilt from an RLlib checkpoint without importing Ray.

`rljob play` runs where Ray is not installed (`pip install 'rljob[play]'`: torch and ALE), and the
evaluation at the end of training uses the same network, so that what it scores is what `play` plays.
RLlib's own restore (`RLModule.from_checkpoint`) needs Ray: the module's class and catalog are pickled by
reference. Here the module's folder in the checkpoint is read as data (rljob.trainer.pickles):

- class_and_ctor_args.pkl: the module's class and constructor arguments (observation and action spaces,
  the model config);
- module_state.pkl: the network's weights, numpy arrays by parameter name.

The network is RLlib's default PPO/APPO module, the one every recipe (and IMPALA) trains: an encoder (a
CNN for images, padded "same" the way TensorFlow pads, its channels-last output flattened; an MLP
otherwise) and the policy head, an MLP ending in the action logits. Only the actor's part is rebuilt,
under RLlib's parameter names, and loaded strictly: the checkpoint of another network is refused by a
name or a shape, not played wrongly. The value head and APPO's target networks play no part in acting.
The forward pass is float32 whatever precision training used (bfloat16 autocast speeds up training).

Imports torch: imported by the evaluation only once a checkpoint was found.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .pickles import as_mapping, read_pickle

MODULE_CTOR_FILE = "class_and_ctor_args.pkl"
MODULE_STATE_FILE = "module_state.pkl"
# RLlib's default modules (by class name), and this project's subclasses of them for uint8 frame stacks.
DEFAULT_MODULES = frozenset({"DefaultPPOTorchRLModule", "DefaultAPPOTorchRLModule", "FrameStackPPOModule", "FrameStackAPPOModule"})
LAYER_NORM_EPS = 0.001  # RLlib's, after TensorFlow's default
# RLlib's DefaultModelConfig for the settings read here: what a model config that leaves one out means.
MODEL_DEFAULTS: Mapping[str, Any] = {
    "fcnet_hiddens": [256, 256], "fcnet_activation": "tanh", "fcnet_use_layernorm": False,
    "head_fcnet_hiddens": [], "head_fcnet_activation": "relu", "head_fcnet_use_layernorm": False,
    "conv_filters": None, "conv_activation": "relu", "vf_share_layers": True, "use_lstm": False,
}
ACTIVATIONS: Mapping[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU, "swish": nn.SiLU}


class ChannelsLastCNN(nn.Module):
    """(n, h, w, c) in, (n, h', w', c') out, as RLlib's TorchCNN: flattening it gives RLlib's feature order."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.cnn = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PolicyNetwork(nn.Module):
    """Observations in, action logits out: the encoder and policy head of RLlib's default PPO/APPO module.

    Image policies also take uint8 frame stacks (n, frames, h, w), ALE's layout and the lean runner's,
    scaled to [-1, 1] channels-last floats as in training (RLlib's NormalizedImageEnv and the frame-stack
    modules scale alike), so that every Atari policy plays on ALE's own stacks.
    """

    def __init__(self, encoder: nn.Module, pi: nn.Module, observation_space: gym.Space, action_space: gym.Space,
                 *, images: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.pi = pi
        self.observation_space = observation_space
        self.action_space = action_space
        self.images = images

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.images and obs.dtype == torch.uint8:
            obs = obs.permute(0, 2, 3, 1).float() * (1.0 / 128.0) - 1.0
        return self.pi(self.encoder(obs.float()))

    def load_weights(self, weights: Mapping[str, torch.Tensor], *, shared: bool) -> None:
        """The actor's weights under RLlib's names, loaded strictly (each parameter present, with its shape)."""
        encoder = "encoder.encoder.net." if shared else "encoder.actor_encoder.net."
        if not self.images:
            encoder += "mlp."
        for prefix, part in ((encoder, self.encoder), ("pi.net.mlp.", self.pi)):
            part.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)


def load_policy(module_dir: Path) -> PolicyNetwork:
    """The policy network of the RLModule saved in `module_dir`, on the CPU, in inference mode.

    Raises ConfigError with one line when the folder holds no module, or a module that is not one of RLlib's
    default PPO/APPO networks.
    """
    ctor_file, state_file = module_dir / MODULE_CTOR_FILE, module_dir / MODULE_STATE_FILE
    if not ctor_file.is_file() or not state_file.is_file():
        raise ConfigError(f"{module_dir}: not an RLModule checkpoint (no {MODULE_CTOR_FILE} or {MODULE_STATE_FILE})")
    try:
        saved = read_pickle(ctor_file)
        state = read_pickle(state_file)
        cls = saved["class"]
        kwargs = dict(saved["ctor_args_and_kwargs"][1])
    except Exception as exc:  # a truncated file, another RLlib version's layout
        raise ConfigError(f"{module_dir}: cannot read the module: {type(exc).__name__}: {exc}") from None
    name = str(getattr(cls, "name", "") or getattr(cls, "__qualname__", "") or cls)
    if name not in DEFAULT_MODULES:
        raise ConfigError(f"{module_dir}: the policy is a {name}; play rebuilds RLlib's default PPO, APPO and IMPALA "
                          "networks only")
    if not isinstance(state, Mapping):
        raise ConfigError(f"{state_file}: not a mapping of parameter names to weights")
    model_config = {**MODEL_DEFAULTS, **as_mapping(kwargs.get("model_config"))}
    network = build_policy(kwargs.get("observation_space"), kwargs.get("action_space"), model_config)
    weights = {str(k): torch.from_numpy(np.array(v)) for k, v in state.items() if isinstance(v, np.ndarray)}
    try:
        network.load_weights(weights, shared=bool(model_config["vf_share_layers"]))
    except RuntimeError as exc:  # torch's account of the missing, unexpected and mis-shaped weights
        lines = str(exc).splitlines()
        detail = " ".join(line.strip() for line in lines[1:3]) or lines[0]
        raise ConfigError(f"{module_dir}: the weights do not fit RLlib's default network for its model config: {detail}") from None
    return network.eval()


def build_policy(observation_space: Any, action_space: Any, model_config: Mapping[str, Any]) -> PolicyNetwork:
    """RLlib's default actor network for these spaces and a complete model config (MODEL_DEFAULTS filled in)."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"only discrete actions can be played; this policy's action space is {action_space}")
    if not isinstance(observation_space, gym.spaces.Box):
        raise ConfigError(f"this policy's observation space is {observation_space}; play rebuilds networks for Box spaces")
    if model_config["use_lstm"]:
        raise ConfigError("this policy has an LSTM; play rebuilds feed-forward networks only")
    shape = tuple(observation_space.shape)
    encoder: nn.Module
    if len(shape) == 3:
        # The frame-stack modules' catalog builds the CNN for (h, w, frames) floats out of (frames, h, w) uint8 stacks.
        dims = (shape[1], shape[2], shape[0]) if observation_space.dtype == np.uint8 else shape
        filters = model_config["conv_filters"]
        if not filters:  # RLlib then picks filters by the image size: none of the recipes leaves it to that
            raise ConfigError("this policy's model config names no conv_filters: play cannot tell its CNN's layers")
        layers, latent = cnn_layers(dims, filters, model_config["conv_activation"])
        encoder = nn.Sequential(ChannelsLastCNN(layers), nn.Flatten())
    elif len(shape) == 1:
        hiddens = [int(n) for n in model_config["fcnet_hiddens"]]
        if not hiddens:
            raise ConfigError("this policy's model config has no fcnet_hiddens: RLlib builds no such encoder")
        activation = model_config["fcnet_activation"]
        norm = bool(model_config["fcnet_use_layernorm"])
        encoder = nn.Sequential(*mlp_layers([shape[0], *hiddens], activation, norm, activation, output_norm=norm))
        latent = hiddens[-1]
    else:
        raise ConfigError(f"this policy takes observations of shape {shape}; play rebuilds networks for images and vectors")
    hiddens = [int(n) for n in model_config["head_fcnet_hiddens"]]
    head = mlp_layers([latent, *hiddens, int(action_space.n)], model_config["head_fcnet_activation"],
                      bool(model_config["head_fcnet_use_layernorm"]), None, output_norm=False)
    return PolicyNetwork(encoder, nn.Sequential(*head), observation_space, action_space, images=len(shape) == 3)


def activation_layer(name: Any) -> nn.Module | None:
    """A layer for one of RLlib's activation names; None for "linear" (RLlib then adds no layer at all)."""
    if name is None or str(name).lower() == "linear":
        return None
    try:
        return ACTIVATIONS[str(name).lower()]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r} in the policy's model config") from None


def mlp_layers(dims: Sequence[int], activation: Any, norm: bool, output_activation: Any, *, output_norm: bool) -> list[nn.Module]:
    """RLlib's TorchMLP: Linear, [LayerNorm], activation per hidden layer; the last Linear, [LayerNorm], its activation."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        layers.append(nn.Linear(int(dims[i]), int(dims[i + 1])))
        if output_norm if last else norm:
            layers.append(nn.LayerNorm(int(dims[i + 1]), eps=LAYER_NORM_EPS))
        act = activation_layer(output_activation if last else activation)
        if act is not None:
            layers.append(act)
    return layers


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int | float):
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def cnn_layers(dims: Sequence[int], filters: Sequence[Sequence[Any]], activation: Any) -> tuple[list[nn.Module], int]:
    """RLlib's TorchCNN for (h, w, c) inputs: [ZeroPad2d], Conv2d, activation per filter; and the flattened size.

    A filter is [channels, kernel, stride] or [channels, kernel, stride, "same"|"valid"]; "same" pads as
    TensorFlow does (an odd padding's extra row and column at the bottom and right).
    """
    height, width, depth = (int(d) for d in dims)
    layers: list[nn.Module] = []
    for spec in filters:
        channels, kernel, stride = int(spec[0]), _pair(spec[1]), _pair(spec[2])
        if (spec[3] if len(spec) > 3 else "same") == "same":
            out_h, out_w = math.ceil(height / stride[0]), math.ceil(width / stride[1])
            pad_h = (out_h - 1) * stride[0] + kernel[0] - height
            pad_w = (out_w - 1) * stride[1] + kernel[1] - width
            layers.append(nn.ZeroPad2d((pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)))
        else:
            out_h, out_w = math.ceil((height - kernel[0] + 1) / stride[0]), math.ceil((width - kernel[1] + 1) / stride[1])
        layers.append(nn.Conv2d(depth, channels, kernel, stride))
        act = activation_layer(activation)
        if act is not None:
            layers.append(act)
        height, width, depth = out_h, out_w, channels
    return layers, height * width * depth
