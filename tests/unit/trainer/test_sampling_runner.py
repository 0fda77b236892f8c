"""The lean env runner: on Atari against RLlib's stock runner (same seeds, same weights, the same games), and on
any env its config names.

Both runners step ale-py's `AtariVectorEnv` with the same preprocessing and seeds; the stock one in
sync mode with RLlib's frame-stacking connector, the lean one asynchronously with ALE's own stacks.
The policy is the recipe's network with the same weights in both, and its action head is biased so
that greedy actions do not depend on the observations (NOOP every step): each env then plays the
same game in both runners whatever the async order, and observations, network outputs, rewards,
terminations and returns can be compared step by step.

Where they must differ, and why: in an episode's first three steps the frame stack is not full yet.
RLlib's connector fills the missing frames with 0.0 (mid-grey after scaling), ALE with black pixels
(-1.0 after scaling), so the network outputs of those three steps differ; the test checks the lean
runner's padding is black and compares the network outputs from the fourth step on. Everything else
is compared exactly.

Beyond Atari, a counting env of float observations stands for any envpool-style env: the runner makes it with
the factory env_config names and samples it, and refuses, with the reason, what it cannot sample.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rljob.trainer.recipes.pong import RECIPE
from rljob.trainer.sizing import ResourcePlan

NUM_ENVS = 2
STEPS_PER_ENV = 900  # a game of Pong lost 21-0 without moving lasts about 760 steps
STACK = 4
PADDED_STEPS = STACK - 1
KEY_STEPS = 60


def _runner(args: list[str]) -> Any:
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    options = RECIPE.parse_args(["--model", "tiny", "--envs-per-env-runner", str(NUM_ENVS), "--seed", "11", *args])
    config = RECIPE.build_config(options, ResourcePlan(0, 1.0, 1, 0))
    cls = config.env_runner_cls or SingleAgentEnvRunner
    return cls(config=config)


@pytest.fixture(scope="module")
def runners() -> Iterator[tuple[Any, Any]]:
    torch.manual_seed(0)
    lean = _runner([])
    stock = _runner(["--env-runner", "stock", "--vectorize", "ale"])
    # Same weights; a large bias on NOOP makes greedy actions independent of the observation.
    with torch.no_grad():
        lean.module.pi.net.mlp[-1].bias[0] += 1000.0
    stock.module.set_state(lean.module.get_state())
    yield lean, stock
    lean.stop()
    stock.stop()


def _scaled(obs: np.ndarray) -> np.ndarray:
    """The lean runner's uint8 (frames, h, w) as the module sees it: channels-last floats in [-1, 1]."""
    return np.moveaxis(obs.astype(np.float32) / 128.0 - 1.0, 0, -1)


def _games(episodes: list[Any], lean: bool) -> dict[bytes, dict[str, Any]]:
    """Each game (episode), its chunks joined in order, keyed by its first 60 frames.

    Episode objects do not say which env played them; a game's opening does (each env's no-ops at
    reset come from its own seeded generator, which shifts the ball's timing). Two games with the same
    opening under the same constant action are the same game, and count once.
    """
    chunks: dict[str, list[Any]] = {}
    for e in episodes:
        chunks.setdefault(e.id_, []).append(e)
    games: dict[bytes, dict[str, Any]] = {}
    for parts in chunks.values():
        parts.sort(key=lambda c: c.t_started)
        if parts[0].t_started != 0 or sum(len(c) for c in parts) < KEY_STEPS:
            continue
        obs = [np.asarray(o) for c in parts for o in c.get_observations(slice(0, len(c)))]
        if lean:
            obs = [_scaled(o) for o in obs]
        key = np.round((np.stack(obs[:KEY_STEPS])[..., -1] + 1.0) * 128.0).astype(np.uint8).tobytes()
        games.setdefault(key, {
            "obs": np.stack(obs),
            "actions": np.concatenate([np.asarray(c.get_actions()) for c in parts]),
            "rewards": np.concatenate([np.asarray(c.get_rewards()) for c in parts]),
            "terminated": np.concatenate([[False] * (len(c) - 1) + [c.is_terminated] for c in parts]),
            "logits": np.concatenate([np.asarray(c.get_extra_model_outputs("action_dist_inputs")) for c in parts]),
            "done": parts[-1].is_done,
            "return": float(sum(float(np.sum(c.get_rewards())) for c in parts)),
        })
    return games


def test_lean_and_stock_runners_play_the_same_games(runners: tuple[Any, Any]) -> None:
    lean, stock = runners
    lean_games = _games(lean.sample(num_timesteps=NUM_ENVS * STEPS_PER_ENV, explore=False), lean=True)
    stock_games = _games(stock.sample(num_timesteps=NUM_ENVS * STEPS_PER_ENV, explore=False), lean=False)
    common = set(lean_games) & set(stock_games)
    assert len(common) >= 1 and len(common) == len(lean_games) == len(stock_games), (
        f"{len(common)} games in common of {len(lean_games)} (lean) and {len(stock_games)} (stock)"
    )
    finished = 0
    for key in common:
        a, b = lean_games[key], stock_games[key]
        n = min(len(a["actions"]), len(b["actions"]))
        assert n >= KEY_STEPS
        assert (a["actions"][:n] == 0).all() and (b["actions"][:n] == 0).all()
        np.testing.assert_array_equal(a["rewards"][:n], b["rewards"][:n])
        np.testing.assert_array_equal(a["terminated"][:n], b["terminated"][:n])
        # The stock runner's episodes hold single frames (its connector stacks them for the module), the
        # lean runner's the stacks the module sees: each stack is the last 4 stock frames, black-padded.
        frames = b["obs"][:, :, :, 0]
        for t in range(n):
            for k in range(STACK):
                want = frames[t - STACK + 1 + k] if t - STACK + 1 + k >= 0 else np.full_like(frames[0], -1.0)
                np.testing.assert_array_equal(a["obs"][t][..., k], want, err_msg=f"step {t}, frame {k}")
        np.testing.assert_allclose(a["logits"][PADDED_STEPS:n], b["logits"][PADDED_STEPS:n], rtol=1e-4, atol=1e-4)
        if a["done"] and b["done"]:
            assert len(a["actions"]) == len(b["actions"])
            assert a["return"] == b["return"] == -21.0
            finished += 1
    assert finished >= 1, "no game finished in both runners: the comparison crossed no episode boundary"


def test_exploration_records_the_behaviour_policy_and_metrics() -> None:
    """v-trace and PPO's ratio need each action's log-probability under the policy that chose it."""
    torch.manual_seed(1)
    runner = _runner([])
    try:
        episodes = runner.sample(num_timesteps=NUM_ENVS * 60, explore=True)
        metrics = runner.get_metrics()
    finally:
        runner.stop()
    actions = np.concatenate([np.asarray(e.get_actions()) for e in episodes])
    logits = np.concatenate([np.asarray(e.get_extra_model_outputs("action_dist_inputs")) for e in episodes])
    logp = np.concatenate([np.asarray(e.get_extra_model_outputs("action_logp")) for e in episodes])
    expected = torch.log_softmax(torch.from_numpy(logits), -1).gather(-1, torch.from_numpy(actions)[:, None])[:, 0]
    np.testing.assert_allclose(logp, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert len(set(actions.tolist())) > 1  # sampled, not greedy
    assert sum(len(e) for e in episodes) >= NUM_ENVS * 60
    assert metrics["num_env_steps_sampled"].peek() == sum(len(e) for e in episodes)


# ── the runner beyond Atari: the env its config names, Discrete actions only ──────────────────────────────

EPISODE_STEPS = 5


class CountingEnv:
    """An envpool-style async vector env of float observations (each env's step count) that end after 5 steps."""

    def __init__(self, num_envs: int, action_space: gym.Space) -> None:
        self.num_envs, self.batch_size = num_envs, num_envs // 2
        self.single_observation_space = gym.spaces.Box(0.0, 100.0, (3,), np.float32)
        self.single_action_space = action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(action_space, num_envs)
        self.unwrapped = self
        self.sent: list[int] = []
        self._steps = np.zeros(num_envs, np.int64)
        self._ended = np.zeros(num_envs, bool)
        self._last = np.arange(num_envs)
        self._queue: list[int] = []

    def _obs(self, ids: np.ndarray) -> np.ndarray:
        return np.repeat(self._steps[ids, None].astype(np.float32), 3, axis=1)

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._steps[:], self._ended[:], self._queue = 0, False, []
        self._last = np.arange(self.num_envs)
        return self._obs(self._last), {"env_id": self._last}

    def send(self, actions: np.ndarray) -> None:
        assert len(actions) == len(self._last)
        self.sent.extend(int(a) for a in actions)
        self._queue.extend(self._last.tolist())

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        ids = np.array(self._queue[: self.batch_size])
        del self._queue[: self.batch_size]
        resets = self._ended[ids]  # next-step autoreset: this result starts a new episode
        self._steps[ids] = np.where(resets, 0, self._steps[ids] + 1)
        self._ended[ids] = ended = self._steps[ids] == EPISODE_STEPS
        self._last = ids
        rewards = np.where(resets, 0.0, 1.0).astype(np.float32)
        return self._obs(ids), rewards, ended, np.zeros(len(ids), bool), {"env_id": ids}

    def close(self) -> None:
        return None


def make_counting_env(env_config: dict[str, Any], num_envs: int) -> CountingEnv:
    """The factory the test configs name: no runner key reaches it."""
    assert set(env_config) == {"actions"}, env_config
    actions = env_config["actions"]
    return CountingEnv(num_envs, gym.spaces.Discrete(actions) if isinstance(actions, int) else gym.spaces.Box(-1, 1, (2,)))


def _counting_runner(env_config: dict[str, Any]) -> Any:
    from ray.rllib.algorithms.ppo import PPOConfig

    from rljob.trainer.sampling.runner import LeanEnvRunner

    config = (PPOConfig()
              .env_runners(env_runner_cls=LeanEnvRunner, num_envs_per_env_runner=4, num_env_runners=0)
              .environment(env_config=env_config)
              .debugging(seed=3))
    return LeanEnvRunner(config=config)


def test_the_runner_samples_the_env_its_config_names() -> None:
    runner = _counting_runner({"vector_env": f"{__name__}:make_counting_env", "actions": 3, "inference_threads": 1})
    try:
        episodes = runner.sample(num_timesteps=40, explore=True) + runner.sample(num_timesteps=40, random_actions=True)
        metrics = runner.get_metrics()
    finally:
        runner.stop()
    env = runner.env
    assert isinstance(env, CountingEnv) and set(env.sent) <= {0, 1, 2} and len(set(env.sent)) > 1
    observations = np.concatenate([np.asarray(e.get_observations(slice(0, len(e)))) for e in episodes])
    assert observations.dtype == np.float32 and observations.shape[1:] == (3,)
    assert sum(len(e) for e in episodes) >= 80
    logits = np.concatenate([np.asarray(e.get_extra_model_outputs("action_dist_inputs")) for e in episodes])
    assert logits.shape[1:] == (3,)
    whole = [e for e in episodes if e.t_started == 0 and e.is_done]
    assert whole and all(len(e) == EPISODE_STEPS and e.get_return() == EPISODE_STEPS for e in whole)
    assert metrics["num_env_steps_sampled"].peek() == sum(len(e) for e in episodes)


@pytest.mark.parametrize(
    ("env_config", "message"),
    [
        ({"actions": 3}, r"env_config\['vector_env'\] names, as 'module:function'; got None"),
        ({"vector_env": f"{__name__}:no_such_factory", "actions": 3}, "has no function 'no_such_factory'"),
        ({"vector_env": f"{__name__}:make_counting_env", "actions": "box"},
         r"samples Discrete actions numbered from 0, but the env's action space is Box\(-1.0, 1.0, \(2,\)"),
    ],
)
def test_an_env_the_runner_cannot_sample_is_refused_with_the_reason(env_config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _counting_runner(env_config)


def test_checkpoints_that_name_the_runners_former_path_still_load_and_sample() -> None:
    """Configs pickled before the runner moved name rljob.trainer.recipes.atari_runner.AtariEnvRunner, and their
    env_config names no env factory: that class makes the Atari env the runner used to make itself."""
    import pickle

    from rljob.trainer.recipes.atari_runner import AtariEnvRunner
    from rljob.trainer.sampling.runner import LeanEnvRunner

    options = RECIPE.parse_args(["--model", "tiny", "--envs-per-env-runner", str(NUM_ENVS), "--seed", "5"])
    config = RECIPE.build_config(options, ResourcePlan(0, 1.0, 1, 0))
    assert config.env_runner_cls is LeanEnvRunner
    config.env_config.pop("vector_env")  # as configs were built then
    new = pickle.dumps(config, protocol=0)
    old = new.replace(b"crljob.trainer.sampling.runner\nLeanEnvRunner\n", b"crljob.trainer.recipes.atari_runner\nAtariEnvRunner\n")
    assert old != new
    restored = pickle.loads(old)
    assert restored.env_runner_cls is AtariEnvRunner and issubclass(AtariEnvRunner, LeanEnvRunner)
    runner = restored.env_runner_cls(config=restored)
    try:
        episodes = runner.sample(num_timesteps=NUM_ENVS * 20, explore=True)
    finally:
        runner.stop()
    assert sum(len(e) for e in episodes) >= NUM_ENVS * 20
    assert np.asarray(episodes[0].get_observations(0)).shape == (4, 64, 64)
    with pytest.raises(ValueError, match="got None"):
        LeanEnvRunner(config=restored)  # the generic runner guesses no env
