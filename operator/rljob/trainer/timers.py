"""Where an iteration's time goes: sampling, the learner's updates, its value pass, the rest, checkpoints.

RLlib's own `timers/*` are exponential moving averages over iterations (coefficient 0.01): after a slow
first iteration they stay near it for a hundred more, so they cannot show what a change moved. These are
plain sums of the seconds each part took during one iteration, logged by the project's env runner and
learners (`reduce="sum"`: RLlib's metrics logger resets them every iteration and adds up several runners'
or learners'), and read here without importing Ray.

With several runners or learners, or an asynchronous algorithm (APPO samples while it learns), the parts
are busy seconds summed over actors, and may add up to more than the iteration.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

# Metric names as the runner and learners log them (the learners' under RLlib's "__all_modules__").
SAMPLE_KEY = "rljob_sample_s"
LEARN_KEY = "rljob_learn_s"
VALUE_PASS_KEY = "rljob_value_pass_s"
ALL_MODULES = "__all_modules__"

# The record's names, in the order a line shows them.
SAMPLE, LEARN, VALUE_PASS, CHECKPOINT, ITERATION = "sample_s", "learn_s", "value_pass_s", "checkpoint_s", "iteration_s"


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def iteration_timers(result: dict[str, Any], iteration_s: float | None) -> dict[str, float]:
    """The parts RLlib's result holds for this iteration; missing parts (another runner, a stock learner) left out."""
    runners = result.get("env_runners") or {}
    learners = (result.get("learners") or {}).get(ALL_MODULES) or {}
    parts = {
        SAMPLE: _seconds(runners.get(SAMPLE_KEY)) if isinstance(runners, dict) else None,
        LEARN: _seconds(learners.get(LEARN_KEY)) if isinstance(learners, dict) else None,
        VALUE_PASS: _seconds(learners.get(VALUE_PASS_KEY)) if isinstance(learners, dict) else None,
        ITERATION: _seconds(iteration_s),
    }
    return {name: round(value, 4) for name, value in parts.items() if value is not None}


def split_text(timers: dict[str, float]) -> str:
    """'learn 55% sample 38%': the shares of the iteration, for the live line (empty without an iteration time)."""
    total = timers.get(ITERATION)
    if not total:
        return ""
    shares = [(name.removesuffix("_s").replace("_", " "), timers[name] / total)
              for name in (LEARN, VALUE_PASS, SAMPLE, CHECKPOINT) if name in timers]
    return " ".join(f"{name} {share:.0%}" for name, share in shares)
