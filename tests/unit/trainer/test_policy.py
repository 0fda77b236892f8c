"""The policy rebuilt without Ray (rljob.trainer.policy) acts as RLlib's own module does, and `rljob play` plays a
checkpoint where Ray cannot be imported.

The modules compared are built by the recipes' own configs (and one with every option the rebuild honours), their
weights drawn at random so that the logits are far from the near-uniform ones of a fresh policy head.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rljob.trainer.errors import ConfigError
from rljob.trainer.evaluate import ALGORITHM_CTOR_FILE, MODULE_PATH, RLLIB_MARKER
from rljob.trainer.pickles import Pickled, read_pickle
from rljob.trainer.policy import MODULE_CTOR_FILE, load_policy
from rljob.trainer.recipes import cartpole, pong
from rljob.trainer.sizing import ResourcePlan
from tests.tooling import ROOT

ACTIONS = gym.spaces.Discrete(6)
PLAN = ResourcePlan(0, 1.0, 1, 0)


def stacks(frame: int = 64, frames: int = 4) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, (frames, frame, frame), np.uint8)


def floats(frame: int = 64, frames: int = 4) -> gym.spaces.Box:
    return gym.spaces.Box(-1.0, 1.0, (frame, frame, frames), np.float32)


def recipe_module(recipe: Any, args: list[str], obs: gym.Space, actions: gym.Space) -> Any:
    """The module the recipe trains, with random weights of a spread that makes the logits differ by whole units."""
    config = recipe.build_config(recipe.parse_args(args), PLAN)
    return randomised(config.get_rl_module_spec(spaces={"default_policy": (obs, actions)}).build())


def randomised(module: Any) -> Any:
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (1.0 / max(1, p[0].numel()) ** 0.5))
    return module.eval()


def rllib_logits(module: Any, obs: np.ndarray) -> torch.Tensor:
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        return module.forward_inference({Columns.OBS: torch.from_numpy(obs)})[Columns.ACTION_DIST_INPUTS]


def restored(module: Any, tmp_path: Path) -> Any:
    module.save_to_path(str(tmp_path / "module"))
    return load_policy(tmp_path / "module")


def samples(space: gym.Space, n: int = 6) -> np.ndarray:
    space.seed(3)
    return np.stack([space.sample() for _ in range(n)])


CASES = {
    # The lean runner's modules (uint8 stacks, shared encoder) for both algorithms; 84x84 frames pad unevenly.
    "lean-ppo": (pong.RECIPE, ["--algorithm", "PPO", "--model", "tiny", "--precision", "float32"], stacks()),
    "lean-appo": (pong.RECIPE, ["--algorithm", "APPO", "--model", "small", "--precision", "float32",
                                "--frame-size", "84"], stacks(84)),
    "stock-appo": (pong.RECIPE, ["--algorithm", "APPO", "--model", "pong", "--env-runner", "stock"], floats()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_atari_policies_act_as_rllib_modules_do(case: str, tmp_path: Path) -> None:
    recipe, args, obs_space = CASES[case]
    module = recipe_module(recipe, args, obs_space, ACTIONS)
    policy = restored(module, tmp_path)
    obs = samples(obs_space)
    expected = rllib_logits(module, obs)
    assert expected.std() > 0.1  # logits that tell actions apart: a wrong layer order could not agree by chance
    with torch.no_grad():
        torch.testing.assert_close(policy(torch.from_numpy(obs)), expected, rtol=1e-4, atol=1e-4)
    assert policy.observation_space == obs_space and policy.action_space == ACTIONS


def test_a_float_frame_policy_also_takes_ales_uint8_stacks(tmp_path: Path) -> None:
    """The stock runner's policies play in ALE's vector env: its stacks are scaled and laid out as in training."""
    recipe, args, obs_space = CASES["stock-appo"]
    module = recipe_module(recipe, args, obs_space, ACTIONS)
    policy = restored(module, tmp_path)
    pixels = samples(stacks())
    scaled = (np.moveaxis(pixels, 1, -1).astype(np.float32) / 128.0 - 1.0).astype(np.float32)
    with torch.no_grad():
        torch.testing.assert_close(policy(torch.from_numpy(pixels)), rllib_logits(module, scaled), rtol=1e-4, atol=1e-4)


def test_cartpoles_mlp_policy_with_separate_encoders(tmp_path: Path) -> None:
    obs_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    module = recipe_module(cartpole.RECIPE, ["--hidden", "16"], obs_space, gym.spaces.Discrete(2))
    policy = restored(module, tmp_path)
    obs = samples(obs_space, 8)
    with torch.no_grad():
        torch.testing.assert_close(policy(torch.from_numpy(obs)), rllib_logits(module, obs), rtol=1e-4, atol=1e-4)


def test_layer_norms_valid_padding_and_other_activations(tmp_path: Path) -> None:
    """What the recipes do not use but RLlib's default model config offers, rebuilt alike."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    image = floats(42, 3)
    for name, obs_space, model in [
        ("mlp", gym.spaces.Box(-1.0, 1.0, (5,), np.float32),
         DefaultModelConfig(fcnet_hiddens=[12, 10], fcnet_activation="relu", fcnet_use_layernorm=True,
                            head_fcnet_hiddens=[9, 7], head_fcnet_activation="tanh", head_fcnet_use_layernorm=True)),
        ("cnn", image,
         DefaultModelConfig(conv_filters=[[6, 5, 3, "valid"], [8, [3, 2], 2]], conv_activation="elu",
                            head_fcnet_hiddens=[], vf_share_layers=False)),
    ]:
        config = PPOConfig().rl_module(model_config=model)
        module = randomised(config.get_rl_module_spec(spaces={"default_policy": (obs_space, ACTIONS)}).build())
        policy = restored(module, tmp_path / name)
        obs = samples(obs_space)
        with torch.no_grad():
            torch.testing.assert_close(policy(torch.from_numpy(obs)), rllib_logits(module, obs), rtol=1e-4, atol=1e-4,
                                       msg=lambda m, name=name: f"{name}: {m}")


def test_other_networks_are_refused_in_one_line(tmp_path: Path) -> None:
    recipe, args, obs_space = CASES["lean-ppo"]
    folder = tmp_path / "module"
    recipe_module(recipe, args, obs_space, ACTIONS).save_to_path(str(folder))
    ctor = folder / MODULE_CTOR_FILE
    original = ctor.read_bytes()

    # Another module class: its forward pass could be anything, so it is not guessed at.
    ctor.write_bytes(pickle.dumps({**pickle.loads(original), "class": gym.spaces.Box}))
    with pytest.raises(ConfigError) as refused:
        load_policy(folder)
    assert "the policy is a Box; play rebuilds RLlib's default PPO, APPO and IMPALA networks only" in str(refused.value)

    # The same class with a model config that does not match the weights: named, not played wrongly.
    ctor.write_bytes(original.replace(b"head_fcnet_hiddens", b"head_fcnet_hiddenX"))
    with pytest.raises(ConfigError) as mismatched:
        load_policy(folder)
    assert "the weights do not fit RLlib's default network" in str(mismatched.value)
    assert "\n" not in str(mismatched.value)

    (folder / "module_state.pkl").unlink()
    with pytest.raises(ConfigError, match="not an RLModule checkpoint"):
        load_policy(folder)


def test_checkpoint_pickles_are_read_without_their_classes(tmp_path: Path) -> None:
    """Ray's classes and the recipes' become stand-ins; spaces and arrays are real; dataclass fields stay readable."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    path = tmp_path / "ctor.pkl"
    path.write_bytes(pickle.dumps({"config": DefaultModelConfig(conv_filters=[(4, 2, 1)]), "space": stacks(),
                                   "weights": np.arange(3.0), "runner": pong.RECIPE}))
    data = read_pickle(path)
    assert isinstance(data["config"], Pickled) and data["config"].module.startswith("ray.rllib.")
    assert data["config"].fields()["conv_filters"] == [(4, 2, 1)]
    assert data["space"] == stacks() and data["weights"].tolist() == [0.0, 1.0, 2.0]
    assert isinstance(data["runner"], Pickled) and type(data["runner"]).__name__ == "AtariRecipe"


BLOCKED_RUN = """
import sys
for name in ("ray", "kopf", "prometheus_client"):
    sys.modules[name] = None  # `import ray` raises ImportError; importlib.util.find_spec("ray") is None
from rljob.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.startswith("ray.")], "ray was imported"
sys.exit(code)
"""


def write_checkpoint(folder: Path) -> Path:
    """An Atari checkpoint laid out as Algorithm.save_to_path lays it out, as far as play reads it."""
    options = pong.RECIPE.parse_args(["--algorithm", "PPO", "--model", "tiny", "--precision", "float32"])
    config = pong.RECIPE.build_config(options, PLAN)
    module = config.get_rl_module_spec(spaces={"default_policy": (stacks(), ACTIONS)}).build()
    module.save_to_path(str(folder.joinpath(*MODULE_PATH)))
    from ray.rllib.algorithms.ppo import PPO

    (folder / ALGORITHM_CTOR_FILE).write_bytes(pickle.dumps({"class": PPO, "ctor_args_and_kwargs": ((config.get_state(),), {})}))
    (folder / RLLIB_MARKER).write_text(json.dumps({"type": "Algorithm"}))
    return folder


def test_play_needs_no_ray(tmp_path: Path) -> None:
    """`rljob play` with `ray` unimportable: the checkpoint read, the policy rebuilt, games played, a GIF written."""
    checkpoint = write_checkpoint(tmp_path / "iteration-000003")
    gif = tmp_path / "game.gif"
    played = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, "play", str(checkpoint), "--games", "2", "--max-steps", "40", "--gif", str(gif),
         "--export", "torchscript", "--export-path", str(tmp_path / "policy.pt")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    )  # fmt: skip
    assert played.returncode == 0, played.stdout + played.stderr
    lines = played.stdout.splitlines()
    assert lines[0] == f"checkpoint {checkpoint} (iteration 3)"
    assert [line.split(":")[0] for line in lines if line.startswith("game ")] == ["game 1 (seed 0)", "game 2 (seed 1)"]
    assert "over 2 games" in played.stdout and gif.stat().st_size > 0
    exported = torch.jit.load(str(tmp_path / "policy.pt"))
    assert tuple(exported(torch.zeros((2, 4, 64, 64), dtype=torch.uint8)).shape) == (2, 6)
