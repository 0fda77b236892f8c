"""Recipe arguments: argparse, but errors become ConfigError instead of SystemExit.

Recipe args arrive from `entrypoint.args` in a manifest, so a typo must end the driver with
EXIT_CONFIG_ERROR and one argparse-style line, never a usage dump followed by exit status 2 from deep
inside the driver (where the operator could not tell it apart from a crash) or a traceback.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import ConfigError

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig


class RecipeArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises ConfigError and never exits or prints usage."""

    def __init__(self, recipe: str) -> None:
        super().__init__(prog=f"recipe {recipe}", add_help=False, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ConfigError(f"{self.prog}: error: {message or 'exited'}".strip())

    def parse(self, args: Sequence[str]) -> argparse.Namespace:
        return self.parse_args(list(args))


def _bounded(kind: Callable[[str], Any], name: str, low: float | None, strict: bool) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} value: {text!r}") from None
        if low is not None and (value <= low if strict else value < low):
            raise argparse.ArgumentTypeError(f"invalid {name} value: {text!r}")
        return value

    convert.__name__ = name  # argparse names the type in some messages
    return convert


positive_int = _bounded(int, "positive int", 0, strict=True)
non_negative_int = _bounded(int, "non-negative int", 0, strict=False)
positive_float = _bounded(float, "positive float", 0.0, strict=True)
non_negative_float = _bounded(float, "non-negative float", 0.0, strict=False)
finite_float = _bounded(float, "float", None, strict=False)


def add_common_arguments(
    parser: RecipeArgumentParser, *, batch: int, lr: float, envs_help: str = "Vectorized envs in each runner."
) -> None:
    """Options every recipe understands; the driver reads the stop and sizing ones itself."""
    g = parser.add_argument_group("sizing")
    g.add_argument("--num-env-runners", type=non_negative_int, default=None,
                   help="Env runner actors; default: one per CPU the cluster has to spare.")
    g.add_argument("--cpus-per-env-runner", type=positive_float, default=None,
                   help="CPUs each env runner reserves; default 1. With the pong network the lean runner's policy "
                   "infers on half of them and ALE emulates on the rest; with a lighter network or "
                   "--gpus-per-env-runner, ALE has them all. Fewer, fatter runners "
                   "with more envs each batch the policy's inference.")
    g.add_argument("--envs-per-env-runner", type=positive_int, default=None, help=envs_help)
    g.add_argument("--num-aggregators", type=non_negative_int, default=None,
                   help="Aggregator actors per learner (APPO); each takes one CPU. Default: 2 with a GPU, else 0.")
    t = parser.add_argument_group("training")
    t.add_argument("--train-batch-size", type=positive_int, default=batch, help="Train batch size per learner.")
    t.add_argument("--rollout-fragment-length", type=positive_int, default=None,
                   help="Steps each env collects per sample call.")
    t.add_argument("--lr", type=positive_float, default=lr, help="Learning rate.")
    t.add_argument("--seed", type=non_negative_int, default=None, help="Random seed.")
    t.add_argument("--min-iteration-seconds", type=non_negative_float, default=None,
                   help="Minimum wall time of one training iteration.")
    t.add_argument("--min-iteration-steps", type=non_negative_int, default=None,
                   help="Minimum env steps sampled in one training iteration.")
    s = parser.add_argument_group("stop (override spec.stop)")
    s.add_argument("--stop-reward", type=finite_float, default=None, help="Stop at this mean episode return.")
    s.add_argument("--stop-timesteps", type=positive_int, default=None, help="Stop after this many env steps.")
    s.add_argument("--stop-iters", type=positive_int, default=None, help="Stop after this many iterations.")


def apply_common(config: AlgorithmConfig, options: argparse.Namespace) -> AlgorithmConfig:
    """Iteration length and seed: the same knobs for every recipe."""
    if options.min_iteration_seconds is not None:
        config.reporting(min_time_s_per_iteration=options.min_iteration_seconds)
    if options.min_iteration_steps is not None:
        config.reporting(min_sample_timesteps_per_iteration=options.min_iteration_steps)
    if options.seed is not None:
        config.debugging(seed=options.seed)
    return config
