"""Sampling throughput of the pong recipe's env runners, against ale-py's own vector env on the same cores.

Not a test: it measures. Half of "time to solve Pong" is how fast env runners turn CPU into frames; this
isolates that half from the learner. It builds the env runners RLlib's Ray actors run (the recipe's own
config) in this process, samples for a fixed time, and prints one figure per line:

    .venv/bin/python benchmarks/env_runner_throughput.py                     # all cores, 16 and 32 envs
    .venv/bin/python benchmarks/env_runner_throughput.py --cpus 4 --envs 64  # one fat runner of 4 CPUs

Figures, each measured in this run:
- the ceiling: the training's own `AtariVectorEnv` alone (64x64, 4 frames stacked, the envs in two halves,
  random actions, no policy, no RLlib) with the same threads and envs;
- the lean runner's own cost: CPU microseconds per env step with a null env (preallocated frames, no
  emulation) and a stub policy (random actions), i.e. everything the runner adds to ALE and the network;
- each runner with the stub policy, then with the recipe's network on the CPU, as a fraction of the ceiling
  (where the lean runner's emulator leaves CPUs to the forward pass, as with the pong network on the CPU, its
  stub-policy line also gives the fraction of ALE on the emulator's own threads);
- the bare loop (ALE's send/recv and the same network, nothing recorded): what the lean runner could reach
  on these cores with this network, and the runner as a fraction of it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pong_time_to_reward import cpu_model

from rljob.trainer.recipes.pong import RECIPE
from rljob.trainer.sampling.fragments import FragmentCollector
from rljob.trainer.sizing import ResourcePlan

RUNNERS = {"lean": ["--env-runner", "lean"], "stock-ale": ["--env-runner", "stock", "--vectorize", "ale"],
           "stock-sync": ["--env-runner", "stock", "--vectorize", "sync"]}


def ale_alone(num_envs: int, threads: int, seconds: float) -> float:
    """The training's own vector env alone: 64x64, 4 frames stacked, the envs in two halves (one emulated while the
    other's actions are chosen), random actions: the runner's work without the runner and the policy."""
    from rljob.trainer.recipes.atari_env import ALE_SETTINGS, make_async_frame_stack_env

    settings = {"env_id": "ale_py:ALE/Pong-v5", "dim": 64, "num_threads": threads, **ALE_SETTINGS}
    env = make_async_frame_stack_env(settings, num_envs, 4)
    half = num_envs // 2
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        env.send(rng.integers(0, 6, size=half))
        for _ in range(20):
            env.recv()
            env.send(rng.integers(0, 6, size=half))
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.recv()
            env.send(rng.integers(0, 6, size=half))
            steps += half
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


class NullEnv:
    """The async vector env's protocol with no emulator: preallocated frames, an episode end every 500 steps."""

    def __init__(self, num_envs: int, frames: int = 4, dim: int = 64) -> None:
        self.num_envs, self.batch_size = num_envs, num_envs // 2
        self._obs = np.random.default_rng(0).integers(0, 255, (self.batch_size, frames, dim, dim), dtype=np.uint8)
        self._zeros = np.zeros(self.batch_size, np.float32)
        self._halves = [np.arange(self.batch_size), np.arange(self.batch_size, num_envs)]
        self._turn = 0
        self._steps = 0

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._turn = 0
        return self._obs, {"env_id": self._halves[0]}

    def send(self, actions: np.ndarray) -> None:
        self._steps += len(actions)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._turn ^= 1
        ended = np.full(self.batch_size, self._steps % (500 * self.num_envs) < self.batch_size)
        return self._obs, self._zeros, ended, np.zeros(self.batch_size, bool), {"env_id": self._halves[self._turn]}

    def close(self) -> None:
        return None


def bare_loop(runner: Any, seconds: float) -> float:
    """The bound the lean runner is held to: ALE's send/recv with half the envs in flight and one batched forward
    pass of the runner's own network per recv, nothing recorded (no arrays, episodes, metrics or RLlib)."""
    from rljob.trainer.sampling import RUNNER_KEYS, VECTOR_ENV_KEY
    from rljob.trainer.sampling.runner import vector_env_factory

    settings = dict(runner.config.env_config)
    make_env = vector_env_factory(settings[VECTOR_ENV_KEY])
    env = make_env({k: v for k, v in settings.items() if k not in RUNNER_KEYS}, runner.num_envs)
    policy = runner._module_policy(True)
    try:
        observations, _ = env.reset(seed=0)
        env.send(policy(observations)[0])
        for _ in range(10):
            observations = env.recv()[0]
            env.send(policy(observations)[0])
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            observations = env.recv()[0]
            env.send(policy(observations)[0])
            steps += len(observations)
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def build_runner(kind: str, num_envs: int, cpus: int, model: str) -> Any:
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    options = RECIPE.parse_args([*RUNNERS[kind], "--envs-per-env-runner", str(num_envs), "--model", model])
    config = RECIPE.build_config(options, ResourcePlan(0, float(cpus), 1, 0))
    return (config.env_runner_cls or SingleAgentEnvRunner)(config=config)


def rate(sample: Callable[[], int], seconds: float, clock: Callable[[], float] = time.perf_counter) -> float:
    """Env steps per second of `clock` (wall or this process's CPU time) over `seconds` of wall time."""
    sample()  # warm-up: resets, first forward passes
    steps, wall, start = 0, time.perf_counter(), clock()
    while time.perf_counter() - wall < seconds:
        steps += sample()
    return steps / (clock() - start)


def sampler(runner: Any, num_steps: int, stub: bool) -> Callable[[], int]:
    return lambda: sum(len(e) for e in runner.sample(num_timesteps=num_steps, random_actions=stub))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Env steps/s of the pong env runners, vs the ALE ceiling on the same cores.")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the runner (ALE and torch threads)")
    p.add_argument("--envs", type=int, nargs="+", default=[16, 32], help="envs per runner (one measurement each)")
    p.add_argument("--runners", nargs="+", choices=sorted(RUNNERS), default=["lean", "stock-ale"])
    p.add_argument("--model", default="pong", help="the recipe's --model")
    p.add_argument("--seconds", type=float, default=15.0, help="sampling time per measurement")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.cpus)  # what Ray gives an actor with num_cpus=N (OMP_NUM_THREADS=N)
    print(f"hardware: {cpu_model()}, {os.cpu_count()} cores, runner on {args.cpus} CPU(s), policy {args.model} on CPU")
    for envs in args.envs:
        ceiling = ale_alone(envs, args.cpus, args.seconds / 2)
        print(f"ALE ceiling (AtariVectorEnv alone, {envs} envs, {args.cpus} threads, random actions): {ceiling:,.0f} env steps/s")
        for kind in args.runners:
            runner = build_runner(kind, envs, args.cpus, args.model)
            try:
                if kind == "lean":
                    real = runner._collector
                    runner._collector = FragmentCollector(NullEnv(envs), obs_shape=(4, 64, 64), num_actions=6)
                    cpu_rate = rate(sampler(runner, envs * 50, stub=True), args.seconds / 2, clock=time.process_time)
                    print(f"env runner lean, {envs} envs: {1e6 / cpu_rate:.1f} CPU microseconds per env step "
                          "(null env, stub policy: the runner's own overhead)")
                    runner._collector = real
                stub = rate(sampler(runner, envs * 50, stub=True), args.seconds)
                emulator = int(runner.config.env_config.get("num_threads", args.cpus))
                line = f"env runner {kind}, {envs} envs, stub policy: {stub:,.0f} env steps/s = {stub / ceiling:.2f} of the ceiling"
                if emulator != args.cpus:  # the emulator leaves CPUs to the forward pass: also against its own threads
                    own = ale_alone(envs, emulator, args.seconds / 2)
                    line += f" ({stub / own:.2f} of ALE on its {emulator} emulator thread(s) alone, {own:,.0f} env steps/s)"
                print(line)
                full = rate(sampler(runner, envs * 50, stub=False), args.seconds)
                print(f"env runner {kind}, {envs} envs: {full:,.0f} env steps/s = {full / ceiling:.2f} of the ceiling")
                if kind == "lean":
                    bare = bare_loop(runner, args.seconds)
                    print(f"bare loop (ALE send/recv + the same network, nothing recorded), {envs} envs: {bare:,.0f} "
                          f"env steps/s = {bare / ceiling:.2f} of the ceiling; env runner lean = {full / bare:.2f} of it")
            finally:
                runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
