"""`rljob run -f JOB.yaml`: run a job's training on this machine (see rljob.trainer.local)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .arguments import positive_int


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a job's training on this machine (no cluster)",
        description="Runs the RLTrainingJob in JOB.yaml on a local Ray instance: the same recipe, stop "
        "criteria and checkpoints as in the cluster. Writes checkpoints/, progress.jsonl, tensorboard/ "
        "and reward_curve.png to the output folder. Needs the trainer extra (pip install 'rljob[trainer]'). "
        "Exit codes: 0 a stop criterion was reached, 1 the trainer's packages are missing, 2 invalid job, "
        "130 interrupted (a checkpoint was saved).",
    )
    p.add_argument("-f", "--file", dest="file", type=Path, required=True, metavar="JOB.yaml", help="the job manifest")
    p.add_argument("--max-iterations", type=positive_int, metavar="N", help="stop after N iterations in this run")
    p.add_argument("--max-duration", type=_seconds, metavar="SECONDS", help="stop after this much time in this run")
    p.add_argument("--output", type=Path, metavar="DIR", help="output folder (default: runs/<job name>/)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    p.add_argument("--num-env-runners", type=positive_int, metavar="N",
                   help="env runners (default: workers.replicas x workers.cpu, capped by this machine's cores)")
    p.add_argument("--source-dir", type=Path, metavar="DIR",
                   help="where a script entrypoint's files are (default: the manifest's folder)")
    p.add_argument("--metrics-port", type=positive_int, metavar="PORT",
                   help="also serve Prometheus metrics on 127.0.0.1:PORT")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's and RLlib's own logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .needs import missing_extra

    # Before the trainer is imported: without the extra, one line saying what to install, not an ImportError.
    problem = missing_extra("trainer")
    if problem:
        print(f"rljob run: error: {problem}", file=sys.stderr)
        return 1
    from ..trainer.local import LocalOptions, run_local

    return run_local(
        LocalOptions(
            job_file=args.file,
            output=args.output,
            resume=args.resume,
            max_iterations=args.max_iterations,
            max_duration=args.max_duration,
            num_env_runners=args.num_env_runners,
            source_dir=args.source_dir,
            metrics_port=args.metrics_port,
            verbose=args.verbose,
        )
    )
