"""IMPALA on Atari Pong, written as a plain RLlib script for any Ray cluster.

This is the kind of script people already have: it connects to a running cluster with
`ray.init(address="auto")`, builds an IMPALA config, and lets Ray Tune train until a stop dict is
met. rljob runs it unchanged as `entrypoint.script` (the head's driver sets RAY_ADDRESS), on one
machine with `rljob run -f job.yaml`, and it works with a bare `ray start --head` too.

    python pong_impala.py --stop-reward 18            # on a machine that runs a Ray head
    python pong_impala.py --smoke                     # a tiny model and one short iteration
"""
from __future__ import annotations

import argparse
import os
import sys

import ale_py
import gymnasium as gym
import ray
from ray import tune
from ray.rllib.algorithms.impala import IMPALAConfig
from ray.rllib.connectors.env_to_module.frame_stacking import FrameStackingEnvToModule
from ray.rllib.connectors.learner.frame_stacking import FrameStackingLearner
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN, NUM_ENV_STEPS_SAMPLED_LIFETIME

FRAMES = 4


def make_pong(env_config: dict) -> gym.Env:
    gym.register_envs(ale_py)
    env = gym.make(
        env_config.get("env_id", "ale_py:ALE/Pong-v5"),
        frameskip=1,  # the wrapper skips (and max-pools) 4 frames itself
        repeat_action_probability=0.0,
        full_action_space=False,
    )
    return wrap_atari_for_new_api_stack(env, dim=64, framestack=None)  # stacking happens in the connectors


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="ale_py:ALE/Pong-v5")
    p.add_argument("--num-env-runners", type=int, default=None, help="default: one per CPU but one")
    p.add_argument("--envs-per-env-runner", type=int, default=4)
    p.add_argument("--stop-reward", type=float, default=18.0)
    p.add_argument("--stop-timesteps", type=int, default=20_000_000)
    p.add_argument("--stop-iters", type=int, default=100_000)
    p.add_argument("--smoke", action="store_true", help="tiny network and batches, stop after one iteration")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    ray.init(address="auto")
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    runners = args.num_env_runners if args.num_env_runners is not None else max(1, cpus - 1)
    print(f"cluster: {cpus} CPUs, {gpus} GPUs; {runners} env runners", flush=True)

    tune.register_env("pong", make_pong)
    conv = [[16, 4, 2], [32, 4, 2], [64, 4, 2], [128, 4, 2]]
    batch, hidden = 500, [256]
    if args.smoke:
        conv, batch, hidden = [[8, 8, 4], [16, 4, 2]], 64, [32]
    config = (
        IMPALAConfig()
        .environment("pong", env_config={"env_id": args.env_id}, clip_rewards=True)
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=1 if args.smoke else args.envs_per_env_runner,
            rollout_fragment_length=32 if args.smoke else 50,
            env_to_module_connector=lambda env, spaces=None, device=None: FrameStackingEnvToModule(num_frames=FRAMES),
        )
        # The learner runs in the trial's own process, on the GPU when the cluster has one.
        .learners(num_learners=0, num_gpus_per_learner=1 if gpus else 0)
        .training(
            learner_connector=lambda obs_space=None, act_space=None: FrameStackingLearner(num_frames=FRAMES),
            train_batch_size_per_learner=batch,
            lr=0.0005,
            vf_loss_coeff=0.5,
            entropy_coeff=0.01,
            grad_clip=40.0,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                vf_share_layers=True, conv_filters=conv, conv_activation="relu", head_fcnet_hiddens=hidden
            )
        )
        .reporting(
            min_time_s_per_iteration=1 if args.smoke else 10,
            min_sample_timesteps_per_iteration=64 if args.smoke else 0,
        )
    )
    stop = {
        f"{ENV_RUNNER_RESULTS}/{EPISODE_RETURN_MEAN}": args.stop_reward,
        NUM_ENV_STEPS_SAMPLED_LIFETIME: args.stop_timesteps,
        "training_iteration": 1 if args.smoke else args.stop_iters,
    }
    storage = os.environ.get("RLJOB_CHECKPOINT_DIR")  # the job's checkpoint volume, when run by rljob
    tuner = tune.Tuner(
        "IMPALA",
        param_space=config,
        run_config=tune.RunConfig(
            name="pong-impala",
            storage_path=os.path.abspath(storage) if storage else None,
            stop=stop,
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=20, checkpoint_at_end=True),
            verbose=1,
        ),
    )
    results = tuner.fit()
    if results.errors:
        print(f"training failed: {results.errors[0]}", file=sys.stderr)
        return 1
    best = results.get_best_result()
    metrics = best.metrics or {}
    ret = (metrics.get(ENV_RUNNER_RESULTS) or {}).get(EPISODE_RETURN_MEAN)
    print(
        f"done: iteration {metrics.get('training_iteration')}, "
        f"{metrics.get(NUM_ENV_STEPS_SAMPLED_LIFETIME)} env steps, episode return mean {ret}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
