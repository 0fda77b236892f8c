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


def test_an_episode_is_a_whole_game_in_a_game_with_lives() -> None:
    """Breakout has five lives: the training's env ends an episode only when the last is lost, and its return is the
    whole game's score (with ale-py's episodic_life the game would restart at every lost life)."""
    from rljob.trainer.recipes.atari_env import make_async_frame_stack_env

    env = make_async_frame_stack_env({"env_id": "ale_py:ALE/Breakout-v5", **ALE_SETTINGS}, 2, 4)
    try:
        _, info = env.reset(seed=0)
        lives = {int(i): [int(n)] for i, n in zip(info["env_id"], info["lives"], strict=True)}
        rng = np.random.default_rng(0)
        ended: list[list[int]] = []
        env.send(rng.integers(0, 4, 1))
        for _ in range(20_000):
            _, _, terminated, truncated, info = env.recv()
            for k, i in enumerate(info["env_id"]):
                lives.setdefault(int(i), []).append(int(info["lives"][k]))
                if terminated[k] or truncated[k]:
                    ended.append(lives.pop(int(i)))
            if ended:
                break
            env.send(rng.integers(0, 4, 1))
    finally:
        env.close()
    assert ended, "no game of random Breakout ended within 20,000 steps"
    seen = ended[0]
    # Lives fall one by one within one episode, from 5 to the last; the episode ends with the last life lost.
    assert seen[0] == 5 and min(seen) <= 1 and seen == sorted(seen, reverse=True), seen


def test_the_single_env_plays_whole_games_too() -> None:
    from ray.rllib.env.wrappers.atari_wrappers import EpisodicLifeEnv

    env = make_atari_env({"env_id": "ale_py:ALE/Breakout-v5", **ALE_SETTINGS})
    try:
        layer, layers = env, []
        while layer is not None:
            layers.append(type(layer))
            layer = getattr(layer, "env", None)
    finally:
        env.close()
    assert EpisodicLifeEnv not in layers and len(layers) > 3


def test_evaluation_sees_the_training_observations() -> None:
    """The evaluation's env (one env per game, in lockstep) and the lean runner's (two halves, asynchronous) give
    the same observations, rewards and ends for the same seed and actions."""
    from rljob.trainer.recipes.atari_env import atari_vector_env, make_async_frame_stack_env

    settings = {**PONG, "dim": 64}
    training = make_async_frame_stack_env(settings, 2, 4)
    evaluation = atari_vector_env(settings, 2, 4)
    rng = np.random.default_rng(7)
    try:
        obs, info = evaluation.reset(seed=11)
        evaluated = {0: [obs[0]]}
        t_obs, t_info = training.reset(seed=11)
        trained: dict[int, list[np.ndarray]] = {int(i): [o] for i, o in zip(t_info["env_id"], t_obs, strict=True)}
        actions = rng.integers(0, 6, 600)
        for step in range(len(actions)):
            obs, _, _, _, info = evaluation.step(np.array([actions[step], 0]))
            evaluated[0].append(obs[list(info["env_id"]).index(0)])
        # The training env: env 0's half receives the same actions, whenever it comes back.
        sent = 0
        current = [int(i) for i in t_info["env_id"]]
        training.send(np.array([actions[0] if current[0] == 0 else 0]))
        sent += current[0] == 0
        while sent <= len(actions) and len(trained.get(0, [])) <= len(actions):
            t_obs, _, _, _, t_info = training.recv()
            i = int(t_info["env_id"][0])
            trained.setdefault(i, []).append(t_obs[0])
            if i == 0:
                if sent == len(actions):
                    break
                training.send(np.array([actions[sent]]))
                sent += 1
            else:
                training.send(np.array([0]))
    finally:
        training.close()
        evaluation.close()
    assert len(trained[0]) == len(evaluated[0]) == len(actions) + 1
    for a, b in zip(trained[0], evaluated[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in trained[0]}) > 100  # the game moved: equal because the same, not because still
