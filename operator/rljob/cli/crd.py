"""`rljob crd`: prints the CustomResourceDefinition generated from the API models."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crd", help="print the RLTrainingJob CustomResourceDefinition (YAML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0
