"""`rljob pod head|worker|driver`: the main process of the job's pods (see rljob.trainer.pod)."""
from __future__ import annotations

import argparse

from ..api.constants import ROLE_HEAD, ROLE_WORKER


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pod",
        help="run as a job's pod (the operator sets this as the container command)",
        description="head: pip-install spec.pipPackages, start the Ray head, run the driver, exit with its code. "
        "worker: join the head's Ray cluster and stay (rejoining after head restarts) until SIGTERM. "
        "driver: only the driver, against a running cluster (RAY_ADDRESS). Configured by RLJOB_* variables.",
    )
    p.add_argument("role", choices=(ROLE_HEAD, ROLE_WORKER, "driver"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..trainer.pod import main

    return main(args.role)
