"""`rljob recipes [NAME]`: the built-in recipes and the `entrypoint.args` each one takes.

Recipe arguments live in the manifest as plain strings, so without this a user would have to read the
source to learn that `--stop-reward` or `--vectorize` exist. Needs no Ray: recipes parse without it.
"""
from __future__ import annotations

import argparse
import sys

from ..api.models import RECIPES


class _ShowDefaults(argparse.HelpFormatter):
    """Appends "(default: X)" where there is a default to show; None means "decided at run time"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings and "default" not in text:
            text += f" (default: {action.default})"
        return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the built-in recipes, or print the arguments one takes")
    p.add_argument("name", nargs="?", help="a recipe (prints the args it takes in entrypoint.args)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..trainer.errors import ConfigError
    from ..trainer.recipes import get_recipe

    if args.name is None:
        for name in RECIPES:
            recipe = get_recipe(name)
            print(f"{name:10} {recipe.algorithm:6} {(recipe.__doc__ or '').strip().splitlines()[0]}")
        print("\n`rljob recipes NAME` prints the args a recipe takes (spec.entrypoint.args).")
        return 0
    try:
        recipe = get_recipe(args.name)
    except ConfigError as exc:
        print(f"rljob recipes: {str(exc).removeprefix('spec.entrypoint.recipe: ')}", file=sys.stderr)
        return 2
    parser = recipe.parser()
    parser.formatter_class = _ShowDefaults
    parser.usage = f"spec.entrypoint.args of recipe {recipe.name} ({recipe.algorithm})"
    sys.stdout.write(parser.format_help())
    return 0
