"""The ALE vector env behind `--vectorize ale` must look to RLlib exactly like the wrapped single env.

A mismatch in shape, dtype, range or layout would not crash: the same network would silently train on
different inputs in `--vectorize sync` runs, in checkpoints and in the vector-env runs.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rljob.trainer.recipes.atari_env import ALE_SETTINGS, ale_game, make_atari_env

PONG = {"env_id": "ale_py:ALE/Pong-v5", **ALE_SETTINGS}


@pytest.fixture(scope="module")
def single() -> Iterator[Any]:
    env = make_atari_env(PONG)
    yield env
    env.close()


@pytest.fixture(scope="module")
def vector() -> Iterator[Any]:
    env = make_atari_env({**PONG, "num_envs": 3, "num_threads": 2})
    yield env
    env.close()


def test_spaces_match_the_wrapped_single_env(single: Any, vector: Any) -> None:
    assert vector.num_envs == 3
    assert vector.single_observation_space == single.observation_space
    assert vector.single_action_space == single.action_space
    assert vector.observation_space.shape == (3, 64, 64, 1)


def test_frames_match_the_wrapped_single_env(single: Any, vector: Any) -> None:
    obs, _ = vector.reset(seed=3)
    one, _ = single.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (3, 64, 64, 1)
    assert obs.min() >= -1.0 and obs.max() <= 1.0
    # Random no-ops at reset differ, but the start of a Pong rally is the same picture: a transposed,
    # unscaled or colour frame would be far off.
    for frame in obs:
        assert np.abs(frame - one).mean() < 0.02
    assert np.abs(obs[0] - np.flipud(one)).mean() > 0.02  # the comparison can tell an upside-down frame


def test_steps_autoreset_and_return_unclipped_rewards(vector: Any) -> None:
    vector.reset(seed=0)
    rng = np.random.default_rng(0)
    returns = np.zeros(3)
    finished: list[float] = []
    for _ in range(3000):
        obs, reward, terminated, truncated, _infos = vector.step(rng.integers(0, 6, 3))
        assert obs.shape == (3, 64, 64, 1) and reward.shape == terminated.shape == (3,)
        returns += reward
        for i in np.flatnonzero(terminated | truncated):
            finished.append(float(returns[i]))
            returns[i] = 0
        if len(finished) >= 2:
            break
    assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
    # A random Pong player loses 21 to (almost) nothing; a game ends at 21 points.
    assert len(finished) >= 2 and all(-21 <= r <= -15 for r in finished)


def test_errors_name_the_problem() -> None:
    assert ale_game("ale_py:ALE/Breakout-v5") == "breakout"
    with pytest.raises(ValueError, match="'CartPole-v1' is not an ALE environment"):
        ale_game("CartPole-v1")
    with pytest.raises(ValueError, match="frameskip=4"):
        make_atari_env({**PONG, "frameskip": 4, "num_envs": 1})
