"""`rljob crd`: prints the CustomResourceDefinition generated from the API models."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crd", help="print the RLTrainingJob CustomResourceDefinition (YAML)")
    p.add_argument("--reference", action="store_true", help="print the spec reference (Markdown) instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.reference:
        from ..api.reference import markdown

        sys.stdout.write(markdown())
        return 0
    from ..api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0
