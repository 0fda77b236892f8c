"""Atari games (ale-py) with APPO or PPO on the new API stack, sampled by the lean env runner: `AtariRecipe`.

A game's recipe is an instance (recipes/pong.py): its name, the Gymnasium id it plays by default and the
line `rljob recipes` shows; the arguments, their defaults and the config they build are the same for
every game.

Why APPO by default: asynchronous sampling keeps env runners busy while the learner trains, which is
what lets a single GPU learner consume tens of env runners' worth of frames; the v-trace correction
tolerates the resulting policy lag. PPO stays selectable (`--algorithm PPO`). The algorithms' own
defaults (clip, fragment length, classes) come from trainer/algorithms.py.

Why the lean runner (rljob.trainer.sampling): RLlib's stock runner spends most of its time in per-step Python
and leaves the emulator idle while the policy infers. The stock runner stays selectable
(`--env-runner stock`, with `--vectorize`) for comparison.

Defaults start from the published anchors for Pong (RLlib's tuned APPO: train batch 750+, 2 passes
per batch, clip 0.3, grad clip 10, weights broadcast after every update; CleanRL PPO: 8 envs x 128
steps, 4 epochs, clip 0.1, lr 2.5e-4) and keep iterations short so that stop criteria react fast.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ..algorithms import PROFILES, load, profile
from ..errors import ConfigError
from ..sampling import RUNNER_KEYS
from .args import (
    RecipeArgumentParser,
    add_common_arguments,
    apply_common,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from .atari_env import ALE_SETTINGS, ENV_NAME, FRAMESTACK_KEY, ale_game, check_env_id
from .model_settings import INITS, PRECISIONS

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from ..sizing import ResourcePlan

# --vectorize (stock runner only) -> gymnasium's vectorization mode. "ale" makes RLlib call the env creator with
# num_envs, which returns ale-py's AtariVectorEnv (atari_env.make_ale_vector_env).
VECTORIZE_MODES = {"ale": "vector_entry_point", "sync": "sync", "async": "async"}
ENV_RUNNERS = ("lean", "stock")
# Envs per runner when --envs-per-env-runner is not given; the lean runner's scale with its CPUs (measured on
# 2 cores: 64 envs sample 1.4x faster than 16, since bigger halves amortise each forward pass).
DEFAULT_ENVS = {"ale": 8, "sync": 2, "async": 2}
LEAN_ENVS_PER_CPU = 32
LEAN_MAX_ENVS = 256
SAMPLER_WAIT_S = 0.05
MIN_FRAME_SIZE, MAX_FRAME_SIZE = 32, 210

# Conv stacks by name. "pong" is RLlib's Pong example network for 64x64 inputs (64->32->16->8->4);
# "small" is the 2013 DQN network (two convolutions, 256 units: about a quarter of the compute), for CPUs;
# "tiny" exists for tests and CPU smoke runs, where the full network makes every update take seconds.
MODELS: dict[str, dict[str, Any]] = {
    "pong": {"conv_filters": [(16, 4, 2), (32, 4, 2), (64, 4, 2), (128, 4, 2)], "head_fcnet_hiddens": [256]},
    "small": {"conv_filters": [(16, 8, 4), (32, 4, 2)], "head_fcnet_hiddens": [256]},
    "tiny": {"conv_filters": [(8, 8, 4), (16, 4, 2)], "head_fcnet_hiddens": [32]},
}
# Networks whose forward pass on a CPU costs about as much per observation as ALE's step: a lean runner that infers on
# its CPUs leaves them half of those CPUs. The lighter ones are bound by the emulator, which keeps every CPU.
CPU_BOUND_MODELS = frozenset({"pong"})


def _appo_training(options: argparse.Namespace) -> dict[str, Any]:
    return {
        # RLlib's APPO driver otherwise polls for samples in a busy loop: a whole core, and Ray runs
        # the runners and learners at a lower priority (niceness 15) than the driver.
        "timeout_s_sampler_manager": SAMPLER_WAIT_S,
        "target_network_update_freq": 2,
        "broadcast_interval": options.broadcast_interval,
        "circular_buffer_num_batches": options.circular_buffer_num_batches,
        "circular_buffer_iterations_per_batch": options.circular_buffer_iterations_per_batch,
    }


def _ppo_training(options: argparse.Namespace) -> dict[str, Any]:
    return {
        "minibatch_size": min(options.minibatch_size, options.train_batch_size),
        "num_epochs": options.num_epochs,
        "lambda_": options.gae_lambda,
        "use_kl_loss": False,
    }


# The algorithms this recipe trains (rows of trainer/algorithms.py), with the training settings of each one's
# own argument group.
ALGORITHM_TRAINING = {"APPO": _appo_training, "PPO": _ppo_training}
ALGORITHMS = tuple(name for name in PROFILES if name in ALGORITHM_TRAINING)


def frame_stack_env_to_module(num_frames: int, env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    from ray.rllib.connectors.env_to_module.frame_stacking import FrameStackingEnvToModule

    return FrameStackingEnvToModule(num_frames=num_frames)


def frame_stack_learner(num_frames: int, obs_space: Any = None, act_space: Any = None) -> Any:
    from ray.rllib.connectors.learner.frame_stacking import FrameStackingLearner

    return FrameStackingLearner(num_frames=num_frames)


def frame_size(text: str) -> int:
    """Frames smaller than the conv stack's strides leave nothing for it to see; beyond 210 there is nothing to add."""
    value = positive_int(text)
    if not MIN_FRAME_SIZE <= value <= MAX_FRAME_SIZE:
        raise argparse.ArgumentTypeError(f"must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE} pixels (got {value})")
    return value


def frame_layout(observation_space: Any) -> tuple[int, int]:
    """(frame size, frames stacked) of an Atari policy's input, whichever layout it was trained on.

    The lean runner's modules take uint8 stacks (frames, dim, dim); the stock runner's take float
    frames stacked last (dim, dim, frames). Both networks also take the former (rljob.trainer.policy),
    which is what ALE's envs give and what the evaluation feeds them.
    """
    shape = tuple(observation_space.shape)
    if len(shape) != 3:
        raise ConfigError(f"an Atari policy takes stacked frames, but this one takes observations of shape {shape}")
    if str(observation_space.dtype) == "uint8":
        return int(shape[1]), int(shape[0])
    return int(shape[0]), int(shape[2])


class AtariRecipe:
    """An Atari game (ale-py), APPO or PPO on the new API stack, sampled by the lean env runner.

    Each instance is a recipe of its own; its `summary` is its docstring, the line `rljob recipes` lists.
    """

    env_name = ENV_NAME

    def __init__(self, name: str, env_id: str, *, summary: str, epilog: str = "", algorithm: str = "APPO",
                 train_batch_size: int = 2000, lr: float = 0.0005, model: str = "pong") -> None:
        if algorithm not in ALGORITHMS or model not in MODELS:
            raise ValueError(f"recipe {name}: no algorithm {algorithm!r} or model {model!r} here")
        self.name = name
        self.env_id = env_id
        self.__doc__ = summary
        self.epilog = epilog
        self.algorithm = algorithm
        self.train_batch_size = train_batch_size
        self.lr = lr
        self.model = model

    def parser(self) -> RecipeArgumentParser:
        p = RecipeArgumentParser(self.name)
        p.epilog = self.epilog or None
        add_common_arguments(
            p, batch=self.train_batch_size, lr=self.lr,
            envs_help=f"Envs in each runner; default {LEAN_ENVS_PER_CPU} per runner CPU with the lean runner (an even "
            "number: it steps them in two halves), 8 with the stock runner's ale, 2 with sync or async.",
        )
        a = p.add_argument_group("atari")
        a.add_argument("--algorithm", choices=ALGORITHMS, default=self.algorithm,
                       help="APPO (asynchronous, v-trace; the GPU learner never waits for samples) or PPO (synchronous).")
        a.add_argument("--env-runner", choices=ENV_RUNNERS, default="lean",
                       help="lean (ale-py's vector env stepped asynchronously, half the envs in flight while the policy "
                       "infers on the other half; uint8 frame stacks) or stock (RLlib's SingleAgentEnvRunner).")
        a.add_argument("--env", default=self.env_id, help="Gymnasium id of the Atari game.")
        a.add_argument("--framestack", type=positive_int, default=4, help="Frames stacked into one observation.")
        a.add_argument("--frame-size", type=frame_size, default=64,
                       help="Height and width of the grayscale frames the policy sees (ALE resizes 210x160 to this).")
        a.add_argument("--model", choices=sorted(MODELS), default=self.model, help="Network size.")
        a.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="Forward and backward passes in bfloat16 (weights, losses and optimizer in float32): auto "
                       "uses it where the hardware multiplies in bfloat16 (AVX-512 BF16 or AMX CPUs, GPUs that "
                       "support it), float32 never. Lean runner only.")
        a.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                       help="Convolutions in NHWC memory (faster in oneDNN's CPU kernels). Lean runner only.")
        a.add_argument("--init", choices=INITS, default="orthogonal",
                       help="orthogonal (gain sqrt 2, policy head 0.01, value head 1: the first policy is near uniform "
                       "whatever the seed) or default (RLlib's). Lean runner only.")
        a.add_argument("--gpus-per-env-runner", type=non_negative_float, default=0.0,
                       help="GPU share of each env runner: the lean runner's policy then infers there (0: on its CPUs).")
        a.add_argument("--entropy-coeff", type=non_negative_float, default=0.01, help="Entropy bonus.")
        a.add_argument("--entropy-decay-steps", type=non_negative_int, default=0,
                       help="Env steps over which the entropy bonus falls linearly to 0 (0: constant).")
        a.add_argument("--vf-loss-coeff", type=non_negative_float, default=0.5, help="Value loss weight.")
        a.add_argument("--grad-clip", type=positive_float, default=10.0, help="Global gradient norm clip.")
        a.add_argument("--clip-param", type=positive_float, default=None,
                       help="Surrogate clip (default: " + ", ".join(f"{PROFILES[n].clip_param:g} for {n}" for n in ALGORITHMS)
                       + ").")
        g = p.add_argument_group("APPO")
        g.add_argument("--broadcast-interval", type=positive_int, default=1,
                       help="Learner updates between weight broadcasts to env runners.")
        g.add_argument("--circular-buffer-num-batches", type=positive_int, default=4, help="APPO learner buffer size.")
        g.add_argument("--circular-buffer-iterations-per-batch", type=positive_int, default=2,
                       help="How often the learner reuses a batch.")
        o = p.add_argument_group("PPO")
        o.add_argument("--minibatch-size", type=positive_int, default=256, help="SGD minibatch size.")
        o.add_argument("--num-epochs", type=positive_int, default=4, help="SGD passes over each batch.")
        o.add_argument("--gae-lambda", type=non_negative_float, default=0.95, help="GAE lambda.")
        # Short iterations: stop criteria, progress and the job's status react within seconds.
        p.set_defaults(min_iteration_seconds=5.0)
        s = p.add_argument_group("stock env runner")
        s.add_argument("--vectorize", choices=sorted(VECTORIZE_MODES), default="ale",
                       help="How the stock runner steps its envs: ale (ale-py's C++ vector env), sync (one "
                       "Python-wrapped env after another), async (one process per env).")
        return p

    def parse_args(self, args: Sequence[str]) -> argparse.Namespace:
        options = self.parser().parse(args)
        if options.env_runner == "lean":
            envs = options.envs_per_env_runner
            if envs is not None and (envs < 2 or envs % 2):
                raise ConfigError(
                    f"recipe {self.name}: error: argument --envs-per-env-runner: the lean env runner steps its envs in two "
                    f"halves, so it needs an even number >= 2 (got {envs})"
                )
        return options

    def preflight(self, options: argparse.Namespace) -> None:
        problem = check_env_id(options.env)
        if problem:
            raise ConfigError(f"recipe {self.name}: --env: {problem}")
        if options.env_runner == "lean" or options.vectorize == "ale":
            try:
                ale_game(options.env)
            except ValueError as exc:
                what = "--env-runner lean" if options.env_runner == "lean" else "--vectorize ale"
                raise ConfigError(f"recipe {self.name}: {what}: {exc}; use --env-runner stock --vectorize sync") from None

    def build_config(self, options: argparse.Namespace, plan: ResourcePlan) -> AlgorithmConfig:
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
        from ray.tune.registry import register_env

        from .atari_env import make_atari_env

        register_env(ENV_NAME, make_atari_env)
        entropy: Any = options.entropy_coeff
        if options.entropy_decay_steps:
            entropy = [[0, options.entropy_coeff], [options.entropy_decay_steps, 0.0]]
        model = MODELS[options.model]
        lean = options.env_runner == "lean"
        algorithm = profile(options.algorithm)
        threads = max(1, round(plan.cpus_per_env_runner))
        env_config: dict[str, Any] = {"env_id": options.env, "dim": options.frame_size, **ALE_SETTINGS}
        runners: dict[str, Any] = {
            "num_env_runners": plan.num_env_runners,
            "num_cpus_per_env_runner": plan.cpus_per_env_runner,
            "num_gpus_per_env_runner": plan.gpus_per_env_runner,
            "num_envs_per_env_runner": options.envs_per_env_runner
            or (min(LEAN_MAX_ENVS, LEAN_ENVS_PER_CPU * threads) if lean else DEFAULT_ENVS[options.vectorize]),
            "rollout_fragment_length": options.rollout_fragment_length or algorithm.rollout_fragment_length,
            "max_requests_in_flight_per_env_runner": algorithm.requests_in_flight,
        }
        if lean:
            from ..sampling import INFERENCE_THREADS_KEY, VECTOR_ENV_KEY
            from ..sampling.runner import LeanEnvRunner
            from .atari_env import FRAMESTACK_KEY, LEAN_ENV_FACTORY
            from .atari_module import FrameStackCatalog

            # One torch thread per two CPUs: inference overlaps the emulator threads, and on 2 cores one
            # inference thread sampled 10-30 % faster than two (small batches barely use a second thread).
            # With the pong network's forward pass on the CPUs, the emulator gets the CPUs it leaves: on 2 cores
            # one emulator thread beside the inference thread sampled faster than two contending with it; with
            # the small network, two emulator threads stay faster (benchmarks/README.md). On a GPU share the
            # forward pass leaves the CPUs, and the emulator has them all.
            inference_threads = max(1, threads // 2)
            split = options.model in CPU_BOUND_MODELS and not plan.gpus_per_env_runner
            emulator_threads = max(1, threads - inference_threads) if split else threads
            env_config.update(num_threads=emulator_threads,
                              **{FRAMESTACK_KEY: options.framestack, INFERENCE_THREADS_KEY: inference_threads,
                                 VECTOR_ENV_KEY: LEAN_ENV_FACTORY})
            runners["env_runner_cls"] = LeanEnvRunner
        else:
            if options.vectorize == "ale":
                env_config["num_threads"] = threads
            runners["gym_env_vectorize_mode"] = VECTORIZE_MODES[options.vectorize]
            runners["env_to_module_connector"] = partial(frame_stack_env_to_module, options.framestack)
        config: Any = algorithm.config()
        config.environment(ENV_NAME, env_config=env_config, clip_rewards=True)
        config.env_runners(**runners)
        config.learners(num_learners=plan.num_learners, num_gpus_per_learner=plan.gpus_per_learner,
                        learner_class=load(algorithm.learner_class))
        if not lean:  # lean: the observations are frame stacks already
            config.learners(learner_connector=partial(frame_stack_learner, options.framestack))
        training: dict[str, Any] = {
            "train_batch_size_per_learner": options.train_batch_size,
            "lr": options.lr * max(1, plan.num_learners) ** 0.5,
            "vf_loss_coeff": options.vf_loss_coeff,
            "entropy_coeff": entropy,
            "grad_clip": options.grad_clip,
            "grad_clip_by": "global_norm",
            "clip_param": options.clip_param or algorithm.clip_param,
            **ALGORITHM_TRAINING[algorithm.name](options),
        }
        if algorithm.aggregators:
            config.learners(num_aggregator_actors_per_learner=options.num_aggregators)
        config.training(**training)
        model_config = DefaultModelConfig(
            vf_share_layers=True,
            conv_filters=model["conv_filters"],
            conv_activation="relu",
            head_fcnet_hiddens=model["head_fcnet_hiddens"],
        )
        if lean:
            from dataclasses import asdict

            from ray.rllib.core.rl_module.rl_module import RLModuleSpec

            from .model_settings import CHANNELS_LAST_KEY, INIT_KEY, PRECISION_KEY

            spec = RLModuleSpec(module_class=load(algorithm.frame_stack_module), catalog_class=FrameStackCatalog)
            settings = {PRECISION_KEY: options.precision, CHANNELS_LAST_KEY: options.channels_last,
                        INIT_KEY: options.init}
            config.rl_module(rl_module_spec=spec, model_config={**asdict(model_config), **settings})
        else:
            config.rl_module(model_config=model_config)
        return apply_common(config, options)

    def evaluation_env(self, env_config: Mapping[str, Any], policy: Any) -> Any:
        """One game to film (`atari_env.atari_film_env`: ale-py's vector env has no colour screen), its frames as near
        the training's as gymnasium's wrappers make them."""
        from .atari_env import atari_film_env

        dim, framestack = frame_layout(policy.observation_space)
        return atari_film_env({**env_config, "dim": dim}, framestack)

    def evaluation_vector_env(self, env_config: Mapping[str, Any], policy: Any, games: int) -> Any | None:
        """The training's vector env (`atari_env.atari_vector_env`: same game and preprocessing), one env per game,
        for any image policy: for the lean runner's the observations are the training's, frame for frame; the stock
        runner's see the same frames stacked as its connectors stack them. A whole game per episode."""
        if not getattr(policy, "images", False):
            return None
        from .atari_env import atari_vector_env

        dim, framestack = frame_layout(policy.observation_space)
        settings = {k: v for k, v in env_config.items() if k not in (FRAMESTACK_KEY, *RUNNER_KEYS)}
        settings.update(dim=dim, num_threads=max(1, min(games, os.cpu_count() or 1)))
        return atari_vector_env(settings, games, framestack)

