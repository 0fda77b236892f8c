"""The algorithms the built-in recipes train with, one row each: what sizing and the configs need to know of them.

Whether an algorithm samples and learns in turn (PPO) or at once (APPO) decides where its learner runs on
CPUs, whether aggregator actors build its batches, how long its fragments are and how many sample requests
each env runner queues; its row also names the RLlib classes a recipe builds it with. Sizing and the
recipes read the same row, so an algorithm is added (or changed) here, not in a branch in each of them.

RLlib's IMPALA is not a row: the recipes offer APPO (IMPALA's v-trace with a clipped surrogate and target
networks) and PPO. The lean env runner itself would sample for IMPALA too; a user script can train it.

Import-light (sizing and argument parsing read it without Ray): the classes are import paths, imported only
when a config is built.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError


@dataclass(frozen=True)
class AlgorithmProfile:
    """One algorithm's defaults and classes; paths are "module:name", the module relative to rljob.trainer."""

    name: str
    config_class: str  # RLlib's AlgorithmConfig subclass
    learner_class: str  # its torch learner, with the project's timers
    frame_stack_module: str  # RLlib's default module for it, fed the lean runner's uint8 frame stacks
    # The driver samples, then learns, then samples again: env runners and learner never compute at once, so on
    # CPUs the learner runs in the driver on the cores the env runners leave idle while it learns.
    learns_in_turn: bool
    # Aggregator actors per GPU learner by default, building train batches off the learner's process; 0 where
    # the algorithm has none (PPO's learner builds its batch itself). On a CPU learner they would only take cores.
    aggregators: int
    clip_param: float  # the surrogate clip when the recipe's args give none
    # Steps each env collects per sample call: APPO learns from fragments as they come; PPO wants one train
    # batch per round of sampling ("auto").
    rollout_fragment_length: int | Literal["auto"]
    # Sample requests queued on each env runner: a second one lets an asynchronous algorithm's runner sample
    # again as soon as it has returned, instead of idling until the driver's loop comes round.
    requests_in_flight: int

    def config(self) -> Any:
        """A new RLlib config of this algorithm (imports Ray)."""
        return load(self.config_class)()


PROFILES: dict[str, AlgorithmProfile] = {
    p.name: p
    for p in (
        AlgorithmProfile(
            name="APPO",
            config_class="ray.rllib.algorithms.appo:APPOConfig",
            learner_class=".recipes.timed_learners:TimedAPPOLearner",
            frame_stack_module=".recipes.atari_module:FrameStackAPPOModule",
            learns_in_turn=False,
            aggregators=2,
            clip_param=0.3,
            rollout_fragment_length=50,
            requests_in_flight=2,
        ),
        AlgorithmProfile(
            name="PPO",
            config_class="ray.rllib.algorithms.ppo:PPOConfig",
            learner_class=".recipes.timed_learners:TimedPPOLearner",
            frame_stack_module=".recipes.atari_module:FrameStackPPOModule",
            learns_in_turn=True,
            aggregators=0,
            clip_param=0.1,
            rollout_fragment_length="auto",
            requests_in_flight=1,
        ),
    )
}


def profile(algorithm: str) -> AlgorithmProfile:
    """The row of `algorithm`; a ConfigError names the known ones."""
    try:
        return PROFILES[algorithm]
    except KeyError:
        raise ConfigError(f"no built-in support for the algorithm {algorithm!r} (choose from {', '.join(PROFILES)})") from None


def load(path: str) -> Any:
    """The object a "module:name" path names; a module path starting with "." is relative to rljob.trainer."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module, __package__), name)
