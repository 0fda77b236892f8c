"""The lean env runner under its former name and path, for checkpoints saved before it moved to rljob.trainer.sampling.

RLlib pickles the algorithm config, and with it `env_runner_cls`, by module path into every checkpoint;
`Algorithm.from_checkpoint` unpickles it. Those configs' env_config names no env factory (the runner
then made the Atari env itself), so this class makes that env by default. Configs built now name
rljob.trainer.sampling.runner.LeanEnvRunner and the factory.
"""
from __future__ import annotations

from ..sampling.runner import LeanEnvRunner
from .atari_env import LEAN_ENV_FACTORY


class AtariEnvRunner(LeanEnvRunner):
    """The lean runner with the Atari recipe's env when env_config names no factory."""

    default_vector_env = LEAN_ENV_FACTORY
