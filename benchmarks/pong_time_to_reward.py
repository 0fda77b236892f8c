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
import math
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


def training_ceiling(seconds: float, recipe_args: list[str]) -> tuple[float, str]:
    """Agent steps/s of the training's own vector env with random actions: its game, envs, frame size, stack and
    emulator threads, stepped in two halves as the lean runner steps it (send one half, receive the other).

    The end-to-end rate is judged against this, not against ale-py's defaults (84x84, 16 envs), which emulate a
    different amount of work.
    """
    import numpy as np

    from rljob.trainer.recipes import prepare
    from rljob.trainer.recipes.atari import LEAN_ENVS_PER_CPU, LEAN_MAX_ENVS
    from rljob.trainer.recipes.atari_env import ALE_SETTINGS, ale_game, make_async_frame_stack_env

    options = prepare("pong", recipe_args).options
    threads = max(1, round(options.cpus_per_env_runner or 1))
    envs = options.envs_per_env_runner or min(LEAN_MAX_ENVS, LEAN_ENVS_PER_CPU * threads)
    settings = {"env_id": options.env, "dim": options.frame_size, "num_threads": threads, **ALE_SETTINGS}
    env = make_async_frame_stack_env(settings, envs, options.framestack)
    try:
        env.reset(seed=0)  # the first half's observations; the other half arrives with the first recv
        rng = np.random.default_rng(0)
        actions, half = int(env.single_action_space.n), envs // 2
        env.send(rng.integers(0, actions, size=half))
        for _ in range(20):  # warm-up
            env.recv()
            env.send(rng.integers(0, actions, size=half))
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.recv()
            env.send(rng.integers(0, actions, size=half))
            steps += half
        rate = steps / (time.perf_counter() - start)
    finally:
        env.close()
    what = (f"{ale_game(options.env)}, {envs} envs in two halves, {options.frame_size}x{options.frame_size}, "
            f"stack {options.framestack}, {threads} threads")
    return rate, what


def example_args(path: Path) -> list[str]:
    """The recipe args of an example job (make demo's: examples/pong-local.yaml)."""
    spec = yaml.safe_load(path.read_text())["spec"]
    return [str(a) for a in spec["entrypoint"].get("args") or []]


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


def run_once(out: Path, target: float, budget_minutes: float, recipe_args: list[str]) -> list[dict] | None:
    """One `rljob run` into `out`; its progress records, or None when it failed."""
    out.mkdir(parents=True, exist_ok=True)
    job = write_job(out / "job.yaml", target, recipe_args)
    command = [str(Path(sys.executable).parent / "rljob"), "run", "-f", str(job), "--output", str(out),
               "--max-duration", str(budget_minutes * 60)]
    if not Path(command[0]).is_file():
        command[0:1] = [sys.executable, "-c", "import sys; from rljob.cli import main; sys.exit(main(sys.argv[1:]))"]
    with (out / "rljob-run.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    progress = out / "progress.jsonl"
    records = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()] if progress.is_file() else []
    if done.returncode not in (0, 130, 124) or not records:
        print(f"rljob run failed (exit {done.returncode}); see {out / 'rljob-run.log'}", file=sys.stderr)
        return None
    return records


def first_reaching(records: list[dict], value: float) -> dict | None:
    return next((r for r in records if r["episode_return_mean"] is not None and r["episode_return_mean"] >= value), None)


def return_at(records: list[dict], seconds: float, target: float) -> float | None:
    """The mean return of the last iteration that ended within `seconds` of training.

    A run that stopped earlier at its target counts with its last return (make demo stops there too); one
    that stopped earlier for another reason, or had no episode yet, has none.
    """
    if records[-1]["time_total_s"] < seconds and first_reaching(records, target) is None:
        return None
    within = [r for r in records if r["time_total_s"] <= seconds and r["episode_return_mean"] is not None]
    return within[-1]["episode_return_mean"] if within else None


def split(records: list[dict]) -> dict[str, float]:
    """Each timed part's share of the iterations' time, over the second half of the run (after warm-up)."""
    late = [r for r in records[len(records) // 2 :] if (r.get("timers") or {}).get("iteration_s")]
    total = sum(r["timers"]["iteration_s"] for r in late)
    if not total:
        return {}
    parts = ("learn_s", "value_pass_s", "sample_s")
    return {part: sum(r["timers"].get(part, 0.0) for r in late) / total for part in parts}


def main(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        argv, extra_args = argv[:i], argv[i + 1 :]
    else:
        extra_args = []
    p = argparse.ArgumentParser(description="Minutes and env steps for the pong recipe to reach a mean return.")
    p.add_argument("--budget-minutes", type=float, default=15.0, help="training time budget per run")
    p.add_argument("--target", type=float, default=18.0, help="mean episode return to reach")
    p.add_argument("--example", type=Path, default=None,
                   help="take the recipe args from this job (make demo's: examples/pong-local.yaml); args after -- follow")
    p.add_argument("--seeds", type=int, nargs="*", default=None,
                   help="one run per seed (--seed K added to the args); the median and the worst are printed")
    p.add_argument("--output", type=Path, default=None, help="folder of the runs (default runs/pong-benchmark-<time>)")
    p.add_argument("--ceiling-seconds", type=float, default=10.0, help="how long to measure the env alone")
    p.add_argument("--at-minutes", type=float, default=10.0, help="also print the mean return after this much training")
    p.add_argument("--milestones", type=float, nargs="*", default=[],
                   help="mean returns on the way (e.g. -15 -10 0): minutes and env steps to each are printed too")
    p.add_argument("--keep-curve", type=Path, default=None, help="copy the (first) run's reward curve image here")
    args = p.parse_args(argv)

    recipe_args = (example_args(args.example) if args.example else []) + extra_args
    cores = os.cpu_count() or 1
    ceiling, ceiling_what = training_ceiling(args.ceiling_seconds, recipe_args)
    base = args.output or REPO / "runs" / f"pong-benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    seeds: list[int | None] = list(args.seeds) if args.seeds else [None]
    minutes_to: list[float] = []  # inf where the target was not reached
    at: list[float] = []
    rates: list[float] = []
    for seed in seeds:
        out = base if seed is None else base / f"seed-{seed}"
        run_args = recipe_args + ([] if seed is None else ["--seed", str(seed)])
        records = run_once(out, args.target, args.budget_minutes, run_args)
        if records is None:
            continue
        label = "" if seed is None else f"seed {seed}: "
        for milestone in sorted(args.milestones):
            reached = first_reaching(records, milestone)
            print(f"{label}mean return {milestone:g}: " + (
                f"after {reached['time_total_s'] / 60:.1f} min, {reached['env_steps']:,} env steps" if reached else "not reached"))
        hit = first_reaching(records, args.target)
        last = records[-1]
        if hit:
            minutes_to.append(hit["time_total_s"] / 60)
            print(f"{label}minutes to {args.target:g}: {hit['time_total_s'] / 60:.1f} ({hit['env_steps']:,} env steps)")
        else:
            minutes_to.append(math.inf)
            returns = [r["episode_return_mean"] for r in records if r["episode_return_mean"] is not None]
            best = f"{max(returns):.1f}" if returns else "none (no episode finished)"
            print(f"{label}minutes to {args.target:g}: not reached in {last['time_total_s'] / 60:.1f} min "
                  f"({last['env_steps']:,} env steps), best {best}")
        value = return_at(records, args.at_minutes * 60, args.target)
        if value is not None:
            at.append(value)
        print(f"{label}mean return after {args.at_minutes:g} min: " + ("none" if value is None else f"{value:.1f}"))
        late = [r["env_steps_per_second"] for r in records[len(records) // 2 :]]
        rate = statistics.median(late) if late else 0.0
        rates.append(rate)
        shares = split(records)
        print(f"{label}env steps/s: {rate:,.0f} (median of the second half) = {rate / ceiling:.2f} of the env alone; "
              + " ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.0%}" for k, v in shares.items()))
        if args.keep_curve and (out / "reward_curve.png").is_file() and not args.keep_curve.exists():
            shutil.copyfile(out / "reward_curve.png", args.keep_curve)
    if len(seeds) > 1:
        def minutes(value: float) -> str:
            return f"> {args.budget_minutes:g}" if math.isinf(value) else f"{value:.1f}"
        print(f"minutes to {args.target:g} over {len(seeds)} seeds: median {minutes(statistics.median(minutes_to))}, "
              f"worst {minutes(max(minutes_to))}")
        if at:
            print(f"mean return after {args.at_minutes:g} min over {len(at)} seeds: median {statistics.median(at):.1f}, "
                  f"worst {min(at):.1f}")
    print(f"hardware: {cpu_model()}, {cores} cores, GPU {gpu_name()}")
    print(f"env alone ({ceiling_what}, random actions): {ceiling:,.0f} env steps/s")
    print(f"env steps/s end to end as a fraction of the env alone: {statistics.median(rates) / ceiling:.2f}")
    print(f"run folders: {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
