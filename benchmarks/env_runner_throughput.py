"""Sampling throughput of the pong recipe's env runner, against ale-py's own vector env on the same cores.

Not a test: it measures. Half of "time to solve Pong" is how fast env runners turn CPU into frames; this
isolates that half from the learner. It builds the env runner RLlib's Ray actors run (the recipe's own
config: wrappers, frame-stacking connectors, the policy network's forward pass on the CPU) in this
process, once per `--vectorize` mode, samples for a fixed time, and prints one figure per line:

    .venv/bin/python benchmarks/env_runner_throughput.py                     # all cores, 8 and 32 envs
    .venv/bin/python benchmarks/env_runner_throughput.py --cpus 4 --envs 64  # one fat runner of 4 CPUs

The ceiling is AtariVectorEnv alone (random actions, no policy) with the same threads and envs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from pong_time_to_reward import cpu_model

from rljob.trainer.recipes.pong import RECIPE, VECTORIZE_MODES
from rljob.trainer.sizing import ResourcePlan


def ale_alone(num_envs: int, threads: int, seconds: float) -> float:
    import numpy as np
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv("pong", num_envs=num_envs, num_threads=threads, img_height=64, img_width=64, stack_num=1)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(rng.integers(0, 6, size=num_envs))
            steps += num_envs
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def runner_alone(mode: str, num_envs: int, cpus: int, seconds: float, model: str) -> float:
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    options = RECIPE.parse_args(["--vectorize", mode, "--envs-per-env-runner", str(num_envs), "--model", model])
    config = RECIPE.build_config(options, ResourcePlan(0, float(cpus), 1, 0))
    runner = SingleAgentEnvRunner(config=config)
    try:
        runner.sample(num_timesteps=num_envs * 20)  # warm-up: resets, first forward passes
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += sum(len(e) for e in runner.sample(num_timesteps=num_envs * 50))
        return steps / (time.perf_counter() - start)
    finally:
        runner.stop()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Env steps/s of one pong env runner per vectorize mode, vs the ALE ceiling.")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the runner (ALE and torch threads)")
    p.add_argument("--envs", type=int, nargs="+", default=[8, 32], help="envs per runner (one measurement each)")
    p.add_argument("--modes", nargs="+", choices=sorted(VECTORIZE_MODES), default=["sync", "ale"])
    p.add_argument("--model", default="pong", help="the recipe's --model")
    p.add_argument("--seconds", type=float, default=20.0, help="sampling time per measurement")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.cpus)  # what Ray gives an actor with num_cpus=N (OMP_NUM_THREADS=N)
    print(f"hardware: {cpu_model()}, {os.cpu_count()} cores, runner on {args.cpus} CPU(s), policy {args.model} on CPU")
    for envs in args.envs:
        ceiling = ale_alone(envs, args.cpus, args.seconds / 2)
        print(f"ALE ceiling ({envs} envs, {args.cpus} threads, no policy): {ceiling:,.0f} env steps/s")
        results = {mode: runner_alone(mode, envs, args.cpus, args.seconds, args.model) for mode in args.modes}
        for mode, rate in results.items():
            print(f"env runner --vectorize {mode}, {envs} envs: {rate:,.0f} env steps/s = {rate / ceiling:.2f} of the ceiling")
        if "sync" in results and "ale" in results:
            print(f"ale over sync, {envs} envs: {results['ale'] / results['sync']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
