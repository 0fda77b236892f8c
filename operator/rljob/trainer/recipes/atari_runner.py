"""The lean env runner's former home, kept because checkpoints saved before it moved pickle its class by this path.

RLlib pickles the algorithm config, and with it `env_runner_cls`, by module path into every checkpoint;
`Algorithm.from_checkpoint` and resuming a run unpickle it. The runner is now
rljob.trainer.sampling.runner.LeanEnvRunner; configs built now name that path.
"""
from __future__ import annotations

from ..sampling.runner import LeanEnvRunner as AtariEnvRunner

__all__ = ["AtariEnvRunner"]
