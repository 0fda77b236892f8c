"""`cartpole`: PPO on CartPole-v1, a smoke test that learns in minutes on a laptop CPU.

PPO rather than APPO because its iterations are synchronous: every iteration trains on fresh
samples, so a two-iteration test run has real episodes and a reproducible amount of work.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .args import RecipeArgumentParser, add_common_arguments, apply_common, positive_int

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from ..sizing import ResourcePlan


class CartPoleRecipe:
    """CartPole-v1, PPO: trains in a minute on a laptop; a smoke test for clusters and scripts."""

    name = "cartpole"
    algorithm = "PPO"
    env_name = "CartPole-v1"

    def parser(self) -> RecipeArgumentParser:
        p = RecipeArgumentParser(self.name)
        add_common_arguments(p, batch=1000, lr=0.0003)
        c = p.add_argument_group("cartpole")
        c.add_argument("--minibatch-size", type=positive_int, default=128, help="SGD minibatch size.")
        c.add_argument("--num-epochs", type=positive_int, default=6, help="SGD passes over each batch.")
        c.add_argument("--hidden", type=positive_int, default=64, help="Width of the two hidden layers.")
        return p

    def parse_args(self, args: Sequence[str]) -> argparse.Namespace:
        return self.parser().parse(args)

    def preflight(self, options: argparse.Namespace) -> None:
        return None

    def build_config(self, options: argparse.Namespace, plan: ResourcePlan) -> AlgorithmConfig:
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        config = (
            PPOConfig()
            .environment(self.env_name)
            .env_runners(
                num_env_runners=plan.num_env_runners,
                num_cpus_per_env_runner=plan.cpus_per_env_runner,  # type: ignore[arg-type]  # Ray takes fractions
                num_envs_per_env_runner=options.envs_per_env_runner or 1,
                rollout_fragment_length=options.rollout_fragment_length or "auto",
            )
            .learners(num_learners=plan.num_learners, num_gpus_per_learner=plan.gpus_per_learner)
            .training(
                train_batch_size_per_learner=options.train_batch_size,
                minibatch_size=min(options.minibatch_size, options.train_batch_size),
                num_epochs=options.num_epochs,
                lr=options.lr,
                vf_loss_coeff=0.01,
            )
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[options.hidden, options.hidden]))
        )
        return apply_common(config, options)

    def evaluation_env(self, env_config: Mapping[str, Any], policy: Any) -> Any | None:
        return None  # gymnasium's own CartPole-v1, as trained

    def evaluation_vector_env(self, env_config: Mapping[str, Any], policy: Any, games: int) -> Any | None:
        return None  # a game lasts 500 steps at most: one after another is quick enough


RECIPE = CartPoleRecipe()
