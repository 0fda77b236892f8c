"""The members of RLlib the project's runner, learners and modules rely on that RLlib does not promise to keep.

The lean Atari runner overrides SingleAgentEnvRunner's sampling and reuses its metrics helpers; the timed
learners wrap TorchLearner's per-minibatch `_update`; the frame-stack modules call the default modules'
`_forward_*`. A rename in an RLlib upgrade would otherwise show up as an AttributeError in the middle of a run
(or, for an attribute read with a default, as silently wrong figures): this fails first, naming the member.
"""
from __future__ import annotations

import inspect

import pytest
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

# Methods the runner calls or overrides, with the parameters it passes.
RUNNER_METHODS = {
    "_sample": {"num_timesteps", "num_episodes", "explore", "random_actions", "force_reset"},
    "_log_env_steps": {"metric", "num_steps"},
    "_increase_sampled_metrics": set(),
    "_log_episode_metrics": set(),
    "make_env": set(),
    "get_metrics": set(),
}
# Attributes SingleAgentEnvRunner sets up that the runner reads or writes.
RUNNER_ATTRIBUTES = ("_seed", "_device", "_weights_seq_no", "_needs_initial_reset", "_metrics_num_env_steps_sampled")


@pytest.mark.parametrize("name", sorted(RUNNER_METHODS))
def test_the_env_runner_methods_the_lean_runner_uses_exist(name: str) -> None:
    method = getattr(SingleAgentEnvRunner, name, None)
    assert callable(method), f"SingleAgentEnvRunner.{name} is gone"
    parameters = set(inspect.signature(method).parameters)
    assert RUNNER_METHODS[name] <= parameters, f"SingleAgentEnvRunner.{name} lost {RUNNER_METHODS[name] - parameters}"


@pytest.mark.parametrize("name", RUNNER_ATTRIBUTES)
def test_the_env_runner_attributes_the_lean_runner_uses_are_set_by_rllib(name: str) -> None:
    source = "".join(inspect.getsource(c) for c in SingleAgentEnvRunner.__mro__ if c.__module__.startswith("ray."))
    assert f"self.{name} =" in source or f"self.{name}:" in source, f"RLlib no longer sets {name}"


def test_the_learner_step_the_timed_learners_wrap() -> None:
    assert list(inspect.signature(TorchLearner._update).parameters)[:2] == ["self", "batch"]
    from rljob.trainer.algorithms import PROFILES, load

    for algorithm in PROFILES.values():
        learner = load(algorithm.learner_class)
        assert issubclass(learner, TorchLearner)
        assert learner._update is not TorchLearner._update  # the timing wrapper comes first in the MRO


def test_the_module_forwards_the_runner_and_modules_call() -> None:
    for name in ("_forward", "_forward_train", "_forward_inference", "_forward_exploration", "compute_values"):
        assert callable(getattr(DefaultPPOTorchRLModule, name, None)), f"DefaultPPOTorchRLModule.{name} is gone"
    assert list(inspect.signature(DefaultPPOTorchRLModule.compute_values).parameters) == ["self", "batch", "embeddings"]
