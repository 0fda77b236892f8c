"""Built-in recipes: a name in `entrypoint.recipe` maps to a module here exposing `RECIPE`.

A recipe parses its arguments without importing ray (so validation and unit tests stay fast) and
builds an RLlib AlgorithmConfig only when the driver asks, sized by the driver's ResourcePlan. It also
makes the envs its policies are evaluated in (`rljob play`, the evaluation after training) without Ray,
from what the checkpoint holds: the env_config its training ran with and the policy network.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ...api.models import RECIPES
from ..errors import ConfigError

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from ..sizing import ResourcePlan


class Recipe(Protocol):
    """What the driver needs from a recipe."""

    name: str
    algorithm: str
    env_name: str  # the env its configs name (the checkpoint's `env`): how a checkpoint is matched to its recipe

    def parser(self) -> argparse.ArgumentParser:
        """The recipe's arguments (`rljob recipes NAME` prints their help)."""
        ...

    def parse_args(self, args: Sequence[str]) -> argparse.Namespace:
        """Parses `entrypoint.args`; raises ConfigError on a bad argument."""
        ...

    def preflight(self, options: argparse.Namespace) -> None:
        """Checks what can be checked without Ray (e.g. the env id has a ROM); raises ConfigError."""
        ...

    def build_config(self, options: argparse.Namespace, plan: ResourcePlan) -> AlgorithmConfig:
        """The RLlib config for this run."""
        ...

    def evaluation_env(self, env_config: Mapping[str, Any], policy: Any) -> Any | None:
        """One env like the training's for `policy` (rljob.trainer.policy's network), whose `render()` gives RGB
        frames; None: gymnasium's env of that name, made with env_config. Imports no Ray."""
        ...

    def evaluation_vector_env(self, env_config: Mapping[str, Any], policy: Any, games: int) -> Any | None:
        """`games` envs stepped together (one batched forward pass per step; `info["env_id"]` says which envs a step
        returned), or None: the games are played one after another in `evaluation_env`'s env. Imports no Ray."""
        ...


@dataclass(frozen=True)
class RecipeRun:
    """A recipe together with its parsed options: everything the driver needs to build and stop."""

    recipe: Recipe
    options: argparse.Namespace

    @property
    def algorithm(self) -> str:
        """The RLlib algorithm this run trains with: the recipe's, unless its `--algorithm` chose another."""
        return getattr(self.options, "algorithm", None) or self.recipe.algorithm


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"spec.entrypoint.recipe: unknown recipe {name!r} (choose from {', '.join(RECIPES)})")
    module = importlib.import_module(f"{__name__}.{name}")
    recipe: Recipe = module.RECIPE
    return recipe


def prepare(name: str, args: Sequence[str]) -> RecipeRun:
    """Parses the recipe's args: the single place both `rljob run` and the pod driver validate them."""
    recipe = get_recipe(name)
    return RecipeRun(recipe, recipe.parse_args(args))
