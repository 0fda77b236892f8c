"""The data path from an env runner to the learner: what the lean runner ships per env step, and what it costs.

Not a test: it measures. The lean runner hands RLlib whole uint8 frame stacks (4 x 64 x 64 = 16 KB per env
step); consecutive stacks of one episode share three of their four frames, so shipping each step's newest frame
(plus the first stack of each fragment) carries the same information in about a quarter of the bytes, at the
price of rebuilding the stacks on the receiving side. This script measures both, through Ray's object store,
between two processes of one machine (the path from a runner to an aggregator actor or a learner on the same
node):

    .venv/bin/python benchmarks/runner_data_path.py                       # 32 envs, 2 emulator threads
    .venv/bin/python benchmarks/runner_data_path.py --envs 128 --threads 4  # one runner of examples/pong.yaml

A Ray actor samples fragments of `--fragment` steps per env with random actions (the collector the runner uses)
and returns them as the episodes RLlib receives (frame stacks), or as single frames. Printed, one figure per line:
bytes per env step; the transfer (pickling in the actor, the object store, unpickling here) per env step and as
a fraction of the sampling time per env step measured in the same run; for single frames also the rebuild of
the stacks per env step (checked to give back exactly the stacks); and the MB/s one runner would ship at the
sampling rate measured.
"""
from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time
from typing import Any

import numpy as np
from pong_time_to_reward import cpu_model

FRAGMENT_ARRAYS = ("actions", "rewards", "action_logp", "action_dist_inputs", "weights_seq_no")


def thin(observations: np.ndarray) -> dict[str, np.ndarray]:
    """A fragment's frame stacks as its first stack and the newest frame of every later step."""
    return {"first": observations[0], "newest": np.ascontiguousarray(observations[1:, -1])}


def rebuild(frames: dict[str, np.ndarray]) -> np.ndarray:
    """The frame stacks again: stack t is frames t..t+k-1 of the first stack followed by the newest frames."""
    first, newest = frames["first"], frames["newest"]
    k = len(first)
    sequence = np.concatenate([first, newest])
    windows = np.lib.stride_tricks.sliding_window_view(sequence, k, axis=0)  # (T + 1, h, w, k)
    return np.ascontiguousarray(np.moveaxis(windows, -1, 1))


def payload_bytes(payload: Any) -> int:
    """What Ray's serializer moves: the pickle stream plus the out-of-band buffers (numpy arrays)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(payload, protocol=5, buffer_callback=buffers.append)
    return len(stream) + sum(b.raw().nbytes for b in buffers)


def make_sampler(ray: Any) -> Any:
    @ray.remote
    class Sampler:
        """One lean runner's collector with random actions, in its own process."""

        def __init__(self, envs: int, threads: int, framestack: int, dim: int, seed: int) -> None:
            from rljob.trainer.recipes.atari_env import ALE_SETTINGS, make_async_frame_stack_env
            from rljob.trainer.sampling.fragments import FragmentCollector

            settings = {"env_id": "ale_py:ALE/Pong-v5", "dim": dim, "num_threads": threads, **ALE_SETTINGS}
            self.env = make_async_frame_stack_env(settings, envs, framestack)
            self.envs = envs
            space = self.env.single_observation_space
            self.spaces = (space, self.env.single_action_space)
            self.collector = FragmentCollector(self.env, obs_shape=space.shape,
                                               num_actions=int(self.env.single_action_space.n), seed=seed)
            self.rng = np.random.default_rng(seed)

        def policy(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            n = len(observations)
            return (self.rng.integers(0, 6, size=n), np.full(n, -np.log(6), np.float32), np.zeros((n, 6), np.float32))

        def sample(self, steps_per_env: int, mode: str) -> tuple[Any, int, float, float]:
            """(payload, env steps, sampling seconds, wall-clock time when the payload was ready)."""
            from rljob.trainer.sampling.runner import fragment_episode

            started = time.perf_counter()
            collected = self.collector.collect(self.policy, num_steps=steps_per_env * self.envs)
            seconds = time.perf_counter() - started
            if mode == "stacks":
                payload: Any = [fragment_episode(f, *self.spaces) for f in collected.fragments]
            else:
                payload = [{"observations": thin(f.observations), **{k: getattr(f, k) for k in FRAGMENT_ARRAYS}}
                           for f in collected.fragments]
            if mode == "both":
                payload = [(f.observations, p["observations"]) for f, p in zip(collected.fragments, payload, strict=True)]
            return payload, collected.env_steps, seconds, time.time()

    return Sampler


def measure(ray: Any, sampler: Any, mode: str, rounds: int, fragment: int) -> dict[str, float]:
    transfer, sampling, rebuilt, sizes, steps = [], [], [], [], 0
    for _ in range(rounds):
        ref = sampler.sample.remote(fragment, mode)
        payload, n, seconds, ready = ray.get(ref)
        transfer.append((time.time() - ready) / n)
        sampling.append(seconds / n)
        sizes.append(payload_bytes(payload) / n)
        steps += n
        if mode == "frames":
            start = time.perf_counter()
            for item in payload:
                rebuild(item["observations"])
            rebuilt.append((time.perf_counter() - start) / n)
        del payload
    return {"transfer_s": statistics.median(transfer), "sampling_s": statistics.median(sampling),
            "bytes": statistics.median(sizes), "rebuild_s": statistics.median(rebuilt) if rebuilt else 0.0, "steps": steps}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Bytes and seconds per env step from a lean env runner to the learner.")
    p.add_argument("--envs", type=int, default=32, help="envs in the runner (even)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="emulator threads")
    p.add_argument("--fragment", type=int, default=50, help="steps per env per sample call (APPO's rollout fragment)")
    p.add_argument("--framestack", type=int, default=4)
    p.add_argument("--frame-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20, help="sample calls per mode (the first two are not counted)")
    args = p.parse_args(argv)

    import ray

    ray.init(num_cpus=max(2, args.threads), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    try:
        sampler = make_sampler(ray).remote(args.envs, args.threads, args.framestack, args.frame_size, 0)
        # The thin form is lossless: every fragment's stacks are rebuilt exactly from its first stack and newest frames.
        pairs, _, _, _ = ray.get(sampler.sample.remote(args.fragment, "both"))
        for stacks, frames in pairs:
            if not np.array_equal(rebuild(frames), stacks):
                print("single frames do not rebuild the stacks: the frame stack is not a sliding window here")
                return 1
        print(f"single frames rebuild the frame stacks exactly ({len(pairs)} fragments checked)")
        results = {}
        for mode in ("stacks", "frames"):
            measure(ray, sampler, mode, 2, args.fragment)  # warm-up: the object store's first pages, the pickler
            results[mode] = measure(ray, sampler, mode, args.rounds, args.fragment)
    finally:
        ray.shutdown()

    names = {"stacks": "frame stacks (what the lean runner ships)", "frames": "single frames + each fragment's first stack"}
    for mode, r in results.items():
        rate = 1 / r["sampling_s"]
        extra = f"; rebuilding the stacks {r['rebuild_s'] * 1e6:.1f} µs per env step" if mode == "frames" else ""
        print(f"{names[mode]}: {r['bytes']:,.0f} bytes per env step; transfer {r['transfer_s'] * 1e6:.1f} µs per env step "
              f"= {r['transfer_s'] / r['sampling_s']:.3f} of sampling's {r['sampling_s'] * 1e6:.1f} µs{extra}; "
              f"{r['bytes'] * rate / 1e6:.1f} MB/s at this runner's {rate:,.0f} env steps/s")
    s, f = results["stacks"], results["frames"]
    print(f"single frames / frame stacks: bytes {f['bytes'] / s['bytes']:.2f}, "
          f"transfer + rebuild {(f['transfer_s'] + f['rebuild_s']) / s['transfer_s']:.2f}")
    print(f"hardware: {cpu_model()}, {os.cpu_count()} cores; {args.envs} envs, {args.threads} emulator threads, "
          f"fragments of {args.fragment} steps, {args.framestack} x {args.frame_size}x{args.frame_size} uint8 frames")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
