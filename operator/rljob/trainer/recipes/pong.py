"""`pong`: APPO on Atari Pong (new API stack), settings after RLlib's own Pong APPO example.

Why APPO: asynchronous sampling keeps env runners busy while the learner trains, which is what lets a
single GPU learner consume tens of env runners' worth of frames; the v-trace correction tolerates the
resulting policy lag.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .args import (
    RecipeArgumentParser,
    add_common_arguments,
    apply_common,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from .atari_env import ALE_SETTINGS, ENV_NAME, ale_game, check_env_id

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from ..sizing import ResourcePlan

# --vectorize -> gymnasium's vectorization mode. "ale" makes RLlib call the env creator with num_envs, which
# returns ale-py's AtariVectorEnv (atari_env.make_ale_vector_env).
VECTORIZE_MODES = {"ale": "vector_entry_point", "sync": "sync", "async": "async"}

# Conv stacks by name. "pong" is RLlib's Pong example network for 64x64 inputs (64->32->16->8->4);
# "tiny" exists for tests and CPU smoke runs, where the full network makes every update take seconds.
MODELS: dict[str, dict[str, Any]] = {
    "pong": {"conv_filters": [(16, 4, 2), (32, 4, 2), (64, 4, 2), (128, 4, 2)], "head_fcnet_hiddens": [256]},
    "tiny": {"conv_filters": [(8, 8, 4), (16, 4, 2)], "head_fcnet_hiddens": [32]},
}


def _frame_stack_env_to_module(num_frames: int, env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    from ray.rllib.connectors.env_to_module.frame_stacking import FrameStackingEnvToModule

    return FrameStackingEnvToModule(num_frames=num_frames)


def _frame_stack_learner(num_frames: int, obs_space: Any = None, act_space: Any = None) -> Any:
    from ray.rllib.connectors.learner.frame_stacking import FrameStackingLearner

    return FrameStackingLearner(num_frames=num_frames)


class PongRecipe:
    """Atari Pong (ale-py), APPO on the new API stack, after RLlib's Pong example."""

    name = "pong"
    algorithm = "APPO"

    def parser(self) -> RecipeArgumentParser:
        p = RecipeArgumentParser(self.name)
        add_common_arguments(p, batch=500, lr=0.0005)
        a = p.add_argument_group("atari")
        a.add_argument("--env", default="ale_py:ALE/Pong-v5", help="Gymnasium id of the Atari game.")
        a.add_argument("--framestack", type=positive_int, default=4, help="Frames stacked by the connectors.")
        a.add_argument("--model", choices=sorted(MODELS), default="pong", help="Network size.")
        a.add_argument("--entropy-coeff", type=non_negative_float, default=0.01, help="Initial entropy bonus.")
        a.add_argument("--entropy-decay-steps", type=non_negative_int, default=3_000_000,
                       help="Env steps over which the entropy bonus falls linearly to 0 (0: constant).")
        a.add_argument("--vf-loss-coeff", type=non_negative_float, default=1.0, help="Value loss weight.")
        a.add_argument("--broadcast-interval", type=positive_int, default=5,
                       help="Training steps between weight broadcasts to env runners.")
        a.add_argument("--circular-buffer-num-batches", type=positive_int, default=4, help="APPO learner buffer size.")
        a.add_argument("--circular-buffer-iterations-per-batch", type=positive_int, default=2,
                       help="How often the learner reuses a batch.")
        a.add_argument("--vectorize", choices=sorted(VECTORIZE_MODES), default="ale",
                       help="How a runner steps its envs: ale (ale-py's C++ vector env, one native thread per CPU "
                       "of the runner), sync (one Python-wrapped env after another), async (one process per env).")
        return p

    def parse_args(self, args: Sequence[str]) -> argparse.Namespace:
        return self.parser().parse(args)

    def preflight(self, options: argparse.Namespace) -> None:
        problem = check_env_id(options.env)
        if problem:
            raise ConfigError(f"recipe pong: --env: {problem}")
        if options.vectorize == "ale":
            try:
                ale_game(options.env)
            except ValueError as exc:
                raise ConfigError(f"recipe pong: --vectorize ale: {exc}; use --vectorize sync") from None

    def build_config(self, options: argparse.Namespace, plan: ResourcePlan) -> AlgorithmConfig:
        from ray.rllib.algorithms.appo import APPOConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
        from ray.tune.registry import register_env

        from .atari_env import make_atari_env

        register_env(ENV_NAME, make_atari_env)
        entropy: Any = options.entropy_coeff
        if options.entropy_decay_steps:
            entropy = [[0, options.entropy_coeff], [options.entropy_decay_steps, 0.0]]
        model = MODELS[options.model]
        env_config: dict[str, Any] = {"env_id": options.env, **ALE_SETTINGS}
        if options.vectorize == "ale":
            env_config["num_threads"] = max(1, round(plan.cpus_per_env_runner))
        config = (
            APPOConfig()
            .environment(ENV_NAME, env_config=env_config, clip_rewards=True)
            .env_runners(
                num_env_runners=plan.num_env_runners,
                num_cpus_per_env_runner=plan.cpus_per_env_runner,  # type: ignore[arg-type]  # Ray takes fractions
                num_envs_per_env_runner=options.envs_per_env_runner or (8 if options.vectorize == "ale" else 2),
                gym_env_vectorize_mode=VECTORIZE_MODES[options.vectorize],
                env_to_module_connector=partial(_frame_stack_env_to_module, options.framestack),
                rollout_fragment_length=options.rollout_fragment_length or 50,
            )
            .learners(
                num_learners=plan.num_learners,
                num_gpus_per_learner=plan.gpus_per_learner,
                num_aggregator_actors_per_learner=options.num_aggregators,
            )
            .training(
                learner_connector=partial(_frame_stack_learner, options.framestack),
                train_batch_size_per_learner=options.train_batch_size,
                lr=options.lr * plan.num_learners**0.5,
                vf_loss_coeff=options.vf_loss_coeff,
                entropy_coeff=entropy,
                target_network_update_freq=2,
                broadcast_interval=options.broadcast_interval,
                circular_buffer_num_batches=options.circular_buffer_num_batches,
                circular_buffer_iterations_per_batch=options.circular_buffer_iterations_per_batch,
            )
            .rl_module(
                model_config=DefaultModelConfig(
                    vf_share_layers=True,
                    conv_filters=model["conv_filters"],
                    conv_activation="relu",
                    head_fcnet_hiddens=model["head_fcnet_hiddens"],
                )
            )
        )
        return apply_common(config, options)


RECIPE = PongRecipe()
