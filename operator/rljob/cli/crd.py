"""`rljob crd`: prints the CustomResourceDefinition (or the driver's admission policy) generated from the API models."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crd", help="print the RLTrainingJob CustomResourceDefinition (YAML)")
    p.add_argument("--reference", action="store_true", help="print the spec reference (Markdown) instead")
    p.add_argument("--policy", action="store_true",
                   help="print the ValidatingAdmissionPolicy that keeps each job's driver to reporting progress instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.reference:
        from ..api.reference import markdown

        sys.stdout.write(markdown())
        return 0
    from ..api.crd import crd_yaml, driver_policy_yaml

    sys.stdout.write(driver_policy_yaml() if args.policy else crd_yaml())
    return 0
