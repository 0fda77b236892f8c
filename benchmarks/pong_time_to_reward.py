"""Time to solve Pong: runs the `pong` recipe through `rljob run` until a mean return or a time budget.

Not a test: it measures. It first measures the machine's env-stepping ceiling with ale-py's own C++
vector env (AtariVectorEnv: threads, frameskip 4, the same agent steps RLlib's wrappers produce) on
the same cores, then trains with `rljob run` (the project's entry point, writing progress.jsonl), and
prints one figure per line:

    .venv/bin/python benchmarks/pong_time_to_reward.py --budget-minutes 3      # CPU smoke
    .venv/bin/python benchmarks/pong_time_to_reward.py --budget-minutes 15     # 1 GPU + 16 CPUs

Extra arguments after `--` go to the recipe (e.g. `-- --envs-per-env-runner 8 --train-batch-size 1000`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except Exception:
        pass
    return "none"


def ale_ceiling(seconds: float, threads: int) -> tuple[float, int]:
    """Agent steps/s of AtariVectorEnv on Pong with as many threads as cores, random actions."""
    import numpy as np
    from ale_py.vector_env import AtariVectorEnv

    num_envs = min(128, max(8, 8 * threads))
    env = AtariVectorEnv("pong", num_envs=num_envs, num_threads=threads)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = env.action_space.n if hasattr(env.action_space, "n") else env.single_action_space.n
        for _ in range(20):  # warm-up
            env.step(rng.integers(0, actions, size=num_envs))
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(rng.integers(0, actions, size=num_envs))
            steps += num_envs
        return steps / (time.perf_counter() - start), num_envs
    finally:
        env.close()


def write_job(path: Path, target: float, recipe_args: list[str]) -> Path:
    job = {
        "apiVersion": "rljob.dev/v1alpha1",
        "kind": "RLTrainingJob",
        "metadata": {"name": "pong-benchmark"},
        "spec": {
            "experiment": "benchmark",
            "entrypoint": {"recipe": "pong", "args": recipe_args},
            "stop": {"episodeReturnMean": target},
            "workers": {"replicas": 0},
            "head": {"cpu": str(os.cpu_count() or 1)},
            "checkpoint": {"everyIterations": 50, "keep": 1},
        },
    }
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def main(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        argv, recipe_args = argv[:i], argv[i + 1 :]
    else:
        recipe_args = []
    p = argparse.ArgumentParser(description="Minutes and env steps for the pong recipe to reach a mean return.")
    p.add_argument("--budget-minutes", type=float, default=15.0, help="training time budget")
    p.add_argument("--target", type=float, default=18.0, help="mean episode return to reach")
    p.add_argument("--output", type=Path, default=None, help="run folder (default runs/pong-benchmark-<time>)")
    p.add_argument("--ceiling-seconds", type=float, default=10.0, help="how long to measure AtariVectorEnv")
    p.add_argument("--milestones", type=float, nargs="*", default=[],
                   help="mean returns on the way (e.g. -15 -10 0): minutes and env steps to each are printed too")
    p.add_argument("--keep-curve", type=Path, default=None, help="copy the run's reward curve image here")
    args = p.parse_args(argv)

    cores = os.cpu_count() or 1
    ceiling, ceiling_envs = ale_ceiling(args.ceiling_seconds, cores)
    out = args.output or REPO / "runs" / f"pong-benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    job = write_job(out / "job.yaml", args.target, recipe_args)
    command = [str(Path(sys.executable).parent / "rljob"), "run", "-f", str(job), "--output", str(out),
               "--max-duration", str(args.budget_minutes * 60)]
    if not Path(command[0]).is_file():
        command[0:1] = [sys.executable, "-c", "import sys; from rljob.cli import main; sys.exit(main(sys.argv[1:]))"]
    started = time.monotonic()
    with (out / "rljob-run.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - started
    records = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines() if line.strip()] \
        if (out / "progress.jsonl").is_file() else []
    if done.returncode not in (0, 130) or not records:
        print(f"rljob run failed (exit {done.returncode}); see {out / 'rljob-run.log'}", file=sys.stderr)
        return 1

    for milestone in sorted(args.milestones):
        reached = next((r for r in records if r["episode_return_mean"] is not None and r["episode_return_mean"] >= milestone), None)
        if reached:
            print(f"mean return {milestone:g}: after {reached['time_total_s'] / 60:.1f} min, {reached['env_steps']:,} env steps")
        else:
            print(f"mean return {milestone:g}: not reached")
    if args.keep_curve and (out / "reward_curve.png").is_file():
        shutil.copyfile(out / "reward_curve.png", args.keep_curve)
    hit = next((r for r in records if r["episode_return_mean"] is not None and r["episode_return_mean"] >= args.target), None)
    returns = [r["episode_return_mean"] for r in records if r["episode_return_mean"] is not None]
    best = max(returns) if returns else None
    last = records[-1]
    average = last["env_steps"] / last["time_total_s"] if last["time_total_s"] else 0.0
    late = [r["env_steps_per_second"] for r in records[len(records) // 2 :]]  # after warm-up
    steady = statistics.median(late) if late else 0.0
    if hit:
        print(f"minutes to {args.target:g}: {hit['time_total_s'] / 60:.1f}")
        print(f"env steps to {args.target:g}: {hit['env_steps']:,}")
    else:
        best_text = "none (no episode finished)" if best is None else f"{best:.1f}"
        print(f"minutes to {args.target:g}: not reached in {last['time_total_s'] / 60:.1f} min, best {best_text}")
        print(f"env steps to {args.target:g}: not reached ({last['env_steps']:,} env steps sampled)")
    print(f"env steps/s: {steady:,.0f} (median of the second half), {average:,.0f} (average incl. warm-up)")
    print(f"hardware: {cpu_model()}, {cores} cores, GPU {gpu_name()}")
    print(f"ALE ceiling (AtariVectorEnv pong, {ceiling_envs} envs, {cores} threads, frameskip 4): {ceiling:,.0f} env steps/s")
    print(f"env steps/s as a fraction of the ALE ceiling: {steady / ceiling:.2f}")
    print(f"wall time incl. Ray start-up: {wall / 60:.1f} min; iterations: {last['iteration']}; run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
