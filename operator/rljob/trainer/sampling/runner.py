"""The lean env runner: RLlib's SingleAgentEnvRunner with an asynchronous vector env and array-built fragments.

Everything RLlib talks to stays stock (`sample()`, weights and state sync, metrics, checkpoints,
spaces, the RLModule), so learners, aggregator actors, stop criteria and the project's progress
reporting work unchanged. Only the sampling loop differs (see fragments): half the envs step while
the policy infers on the other half, observations stay as the env makes them (the Atari recipe's:
uint8 frame stacks) end to end, and episode objects are made once per fragment instead of once per step.

What it supports: the env its config names (env_config[VECTOR_ENV_KEY], see the package docstring),
with Discrete actions, drawn here from the module's logits as a categorical distribution in one batched
torch call; each action's log-probability and the logits are recorded, which is what the built-in
recipes' learners, APPO's v-trace and PPO's ratio (trainer/algorithms.py), read.

What it leaves out on purpose: the env-to-module and module-to-env connector pipelines (the module
takes the env's observations as they are) and per-step episode callbacks. The built-in Atari recipe
uses neither; the stock runner stays the choice for whatever needs them or other action spaces.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from ..timers import SAMPLE_KEY
from . import INFERENCE_THREADS_KEY, RUNNER_KEYS, VECTOR_ENV_KEY
from .fragments import AsyncVectorEnv, EpisodeStats, Fragment, FragmentCollector


class LeanEnvRunner(SingleAgentEnvRunner):
    """Samples the config's vector env through `FragmentCollector`; selected with `config.env_runners(env_runner_cls=...)`."""

    # The factory where env_config names none; None: env_config must name one.
    default_vector_env: str | None = None

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        # The base constructor calls make_env(), and only on runners that sample (not the driver's local one).
        self._collector: FragmentCollector | None = None
        self._finished: list[EpisodeStats] = []
        super().__init__(config=config, **kwargs)

    def make_env(self) -> None:
        if self.env is not None:
            self.env.close()
        settings = dict(self.config.env_config)
        factory = vector_env_factory(settings.get(VECTOR_ENV_KEY, self.default_vector_env))
        inference_threads = settings.get(INFERENCE_THREADS_KEY)
        if inference_threads and self._device.type == "cpu":
            torch.set_num_threads(int(inference_threads))
        env_config = {k: v for k, v in settings.items() if k not in RUNNER_KEYS}
        self.env = factory(env_config, self.config.num_envs_per_env_runner)
        self.num_envs = self.env.num_envs
        space = self.env.single_observation_space
        self._collector = FragmentCollector(self.env, obs_shape=space.shape, obs_dtype=space.dtype,
                                            num_actions=num_actions(self.env.single_action_space), seed=self._seed)
        self._rng = np.random.default_rng(self._seed)
        self._needs_initial_reset = True

    def _sample(
        self,
        *,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool,
        random_actions: bool = False,
        force_reset: bool = False,
    ) -> list[SingleAgentEpisode]:
        assert self._collector is not None
        if force_reset:
            self._collector.restart()
        self._collector.weights_seq_no = self._weights_seq_no
        policy = self._random_policy if random_actions else self._module_policy(explore)
        started = time.perf_counter()
        collected = self._collector.collect(policy, num_steps=num_timesteps, num_episodes=num_episodes)
        self.metrics.log_value(SAMPLE_KEY, time.perf_counter() - started, reduce="sum")
        self._finished.extend(collected.finished)
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=collected.env_steps)
        self._increase_sampled_metrics(collected.env_steps, len(collected.finished))
        space, actions = self.env.single_observation_space, self.env.single_action_space
        return [fragment_episode(f, space, actions) for f in collected.fragments]

    def get_metrics(self) -> Any:
        for stats in self._finished:
            self._log_episode_metrics(stats.length, stats.episode_return, stats.duration_s)
        self._finished.clear()
        return self.metrics.reduce()

    def stop(self) -> None:
        if self._collector is not None:
            self._collector.close()

    # ── policies ──────────────────────────────────────────────────────────────────────────────────

    def _module_policy(self, explore: bool) -> Any:
        """One batched forward pass on the module's device; actions drawn from the logits in the same call.

        The module is put in eval mode once here: RLlib's public forward_* methods switch it to eval and back
        on every call, a walk over every submodule each time, per batch of envs.
        """
        module, device = self.module, self._device
        module.eval()
        forward = module._forward_exploration if explore else module._forward_inference

        def policy(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            with torch.inference_mode():
                obs = torch.from_numpy(observations).to(device, non_blocking=True)
                logits = forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
                logp_all = torch.log_softmax(logits, dim=-1)
                actions = torch.multinomial(logp_all.exp(), 1)[:, 0] if explore else logits.argmax(dim=-1)
                logp = logp_all.gather(-1, actions[:, None])[:, 0]
                return actions.cpu().numpy(), logp.cpu().numpy(), logits.cpu().numpy()

        return policy

    def _random_policy(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, k = len(observations), num_actions(self.env.single_action_space)
        return (self._rng.integers(0, k, size=n), np.full(n, -np.log(k), np.float32), np.zeros((n, k), np.float32))


def vector_env_factory(path: Any) -> Callable[[dict[str, Any], int], AsyncVectorEnv]:
    """The factory env_config names; a ValueError says what is missing (the runner's actor then fails to start)."""
    if not isinstance(path, str) or ":" not in path:
        raise ValueError(f"the lean env runner makes its env with the factory env_config[{VECTOR_ENV_KEY!r}] names, "
                         f"as 'module:function'; got {path!r}")
    module, _, name = path.partition(":")
    factory = getattr(importlib.import_module(module), name, None)
    if not callable(factory):
        raise ValueError(f"env_config[{VECTOR_ENV_KEY!r}]: {module} has no function {name!r}")
    return factory  # type: ignore[no-any-return]


def num_actions(space: Any) -> int:
    """How many actions a policy chooses from: the runner draws them from logits, so Discrete spaces only."""
    if not isinstance(space, gym.spaces.Discrete) or int(space.start) != 0:
        raise ValueError(f"the lean env runner samples Discrete actions numbered from 0, but the env's action space is "
                         f"{space}; use RLlib's stock env runner for it")
    return int(space.n)


def fragment_episode(f: Fragment, observation_space: Any, action_space: Any) -> SingleAgentEpisode:
    """The episode chunk RLlib ships from the runner to the learner: the fragment's arrays, wrapped without copies."""
    return SingleAgentEpisode(
        id_=f.episode_id,
        observations=f.observations,
        observation_space=observation_space,
        infos=[{}] * len(f.observations),
        actions=f.actions,
        action_space=action_space,
        rewards=f.rewards,
        extra_model_outputs={
            Columns.ACTION_LOGP: f.action_logp,
            Columns.ACTION_DIST_INPUTS: f.action_dist_inputs,
            WEIGHTS_SEQ_NO: f.weights_seq_no,
        },
        terminated=f.terminated,
        truncated=f.truncated,
        t_started=f.t_started,
        len_lookback_buffer=0,
    )
