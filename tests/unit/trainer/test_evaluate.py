"""The evaluation plays a checkpoint in the envs its recipe makes (evaluation hooks), gymnasium's for any other env."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rljob.trainer.errors import ConfigError
from rljob.trainer.evaluate import PolicyCheckpoint, evaluation_recipe, make_env, play_games
from rljob.trainer.recipes import get_recipe
from rljob.trainer.recipes.atari import frame_layout


class Policy(torch.nn.Module):
    """What rljob.trainer.policy rebuilds, as far as the evaluation reads it: spaces, `images`, logits per batch."""

    def __init__(self, observation_space: gym.Space, actions: int, *, images: bool) -> None:
        super().__init__()
        self.observation_space, self.images, self.actions = observation_space, images, actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros((len(obs), self.actions))  # greedy: action 0 every step


def checkpoint(env: str, env_config: dict[str, Any], recipe: str | None = None) -> PolicyCheckpoint:
    return PolicyCheckpoint(path=Path("unused"), env=env, env_config=env_config, recipe=recipe)


ATARI = {"env_id": "ale_py:ALE/Pong-v5", "dim": 64, "frameskip": 1, "repeat_action_probability": 0.0,
         "full_action_space": False}
# What a lean-runner checkpoint's env_config also holds: the runner's keys, which no env takes.
LEAN = {**ATARI, "num_threads": 2, "framestack": 4, "inference_threads": 1,
        "vector_env": "rljob.trainer.recipes.atari_env:make_lean_env"}
STACKS = gym.spaces.Box(0, 255, (4, 48, 48), np.uint8)


@pytest.mark.parametrize(
    ("env", "recipe", "expected"),
    [("rljob-atari", None, "pong"), ("rljob-atari", "pong", "pong"), ("CartPole-v1", None, "cartpole"),
     ("CartPole-v1", "pong", "cartpole"), ("MountainCar-v0", None, None), ("MountainCar-v0", "cartpole", None)],
)
def test_the_recipe_that_trained_on_the_checkpoints_env_makes_its_envs(env: str, recipe: str | None, expected: str | None) -> None:
    found = evaluation_recipe(checkpoint(env, {}, recipe))
    assert (found.name if found else None) == expected


def test_an_atari_policy_plays_its_games_at_once_in_the_training_env_and_is_filmed_in_one_game() -> None:
    policy = Policy(STACKS, 6, images=True)
    ckpt = checkpoint("rljob-atari", LEAN, "pong")
    vector = get_recipe("pong").evaluation_vector_env(LEAN, policy, 3)
    try:
        assert vector.num_envs == 3 and vector.single_observation_space.shape == (4, 48, 48)
    finally:
        vector.close()
    result = play_games(ckpt, policy, 3, 25, seed=5)
    assert (result.lengths, result.truncated, result.seed) == ([25, 25, 25], [True, True, True], 5)
    film = make_env(ckpt, policy)
    try:
        obs, _ = film.reset(seed=0)
        assert obs.shape == (4, 48, 48) and film.render().ndim == 3
    finally:
        film.close()


def test_an_atari_policy_on_other_observations_is_refused_in_one_line() -> None:
    flat = Policy(gym.spaces.Box(-1.0, 1.0, (8,), np.float32), 6, images=False)
    assert get_recipe("pong").evaluation_vector_env(LEAN, flat, 2) is None
    with pytest.raises(ConfigError, match=r"an Atari policy takes stacked frames, but this one takes observations of shape \(8,\)"):
        play_games(checkpoint("rljob-atari", LEAN), flat, 2, 10, seed=0)


def test_a_game_the_recipe_cannot_make_is_one_config_error_line() -> None:
    with pytest.raises(ConfigError, match=r"^cannot create 'ale_py:ALE/NoSuchGame-v5': "):
        play_games(checkpoint("rljob-atari", {**LEAN, "env_id": "ale_py:ALE/NoSuchGame-v5"}), Policy(STACKS, 6, images=True),
                   2, 10, seed=0)


def test_frame_layouts_of_the_lean_and_stock_runners_policies() -> None:
    assert frame_layout(STACKS) == (48, 4)
    assert frame_layout(gym.spaces.Box(-1.0, 1.0, (84, 84, 3), np.float32)) == (84, 3)


def test_cartpole_and_envs_no_recipe_trains_on_are_gymnasiums_played_one_after_another() -> None:
    cartpole = Policy(gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), 2, images=False)
    result = play_games(checkpoint("CartPole-v1", {}, "cartpole"), cartpole, 2, 500, seed=0)
    assert len(result.returns) == 2 and all(5 <= n < 50 for n in result.lengths)  # pushing left falls over soon
    mountain = Policy(gym.spaces.Box(-2.0, 2.0, (2,), np.float32), 3, images=False)
    result = play_games(checkpoint("MountainCar-v0", {}), mountain, 1, 30, seed=0)
    assert result.lengths == [30] and result.truncated == [True]
    with pytest.raises(ConfigError, match=r"^cannot create the env 'NoSuchEnv-v0': "):
        make_env(checkpoint("NoSuchEnv-v0", {}), mountain)
