"""`rljob render -f job.yaml`: the children the operator would create, with no cluster."""
from __future__ import annotations

import argparse
import sys

import yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="print the Kubernetes objects a job becomes (no cluster needed)")
    p.add_argument("-f", "--filename", required=True, help="job manifest (YAML), or - for stdin")
    p.add_argument("--attempt", type=int, default=1, help="render the head pod of this attempt (default 1)")
    p.add_argument("--default-image", default=None, help="image for a job that names none (default: the operator's default)")
    p.add_argument("--operator-namespace", default="rljob-system", help="namespace the operator runs in (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import resources
    from ..api import ManifestError, load_job, load_job_file

    try:
        job = load_job(sys.stdin.read(), "<stdin>") if args.filename == "-" else load_job_file(args.filename)
    except ManifestError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 2
    entry = job.spec.entrypoint
    if entry.recipe is not None:
        # The CRD keeps recipe arguments as plain strings; only the recipe's own parser knows them (without ray).
        from ..trainer.errors import ConfigError
        from ..trainer.recipes import prepare

        try:
            prepare(entry.recipe, entry.args)
        except ConfigError as exc:
            print(f"{args.filename}: spec.entrypoint.args: {exc}", file=sys.stderr)
            return 2
    ctx = resources.BuildContext(operator_namespace=args.operator_namespace)
    if args.default_image:
        ctx = resources.BuildContext(default_image=args.default_image, operator_namespace=args.operator_namespace)
    objects = resources.build(job, ctx, attempt=args.attempt, coordination_deadline="")
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, width=120))
    return 0
