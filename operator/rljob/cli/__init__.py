"""The `rljob` command: the only place that wires subcommands to modules.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets `func` to a
callable taking the parsed args and returning an exit code. Modules are imported lazily by name so
that `rljob run` does not import the operator's dependencies, and the operator image (which lacks
ray and torch) can still run `rljob operator`.

The same parser is installed twice: as `rljob`, and as `kubectl-rljob`, which kubectl runs for
`kubectl rljob ...` (any executable named kubectl-NAME on the PATH is a plugin); there the help and
usage lines say `kubectl rljob`, the command the user typed.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

# Subcommand modules under rljob.cli, in the order `rljob --help` lists them.
COMMANDS = ("run", "play", "recipes", "render", "crd", "submit", "jobs", "fetch", "control", "forward", "operator", "pod", "completion")


PROG = "rljob"
PLUGIN_PROG = "kubectl rljob"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run Ray RLlib reinforcement-learning training as Kubernetes RLTrainingJobs, or on this machine.",
    )
    parser.add_argument("--version", action="version", version=f"rljob {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"{__name__}.{name}"):
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


def plugin_main() -> int:
    """The `kubectl-rljob` entry point: `rljob` itself, its help and usage lines naming `kubectl rljob`."""
    return main(prog=PLUGIN_PROG)


if __name__ == "__main__":
    sys.exit(main())
