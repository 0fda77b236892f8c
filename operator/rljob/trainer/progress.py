"""One training iteration's progress, and the shapes it leaves the driver in: JSON line, status.progress.

Pure functions from RLlib's result dict to a ProgressRecord, so every sink (stdout, progress.jsonl,
Prometheus, the /progress endpoint and termination message the operator reads, TensorBoard, the display)
shows the same numbers.
"""
from __future__ import annotations

import json
import math
import numbers
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from ..api.constants import RETURN_WINDOW_EPISODES
from ..api.models import MAX_PATH_LENGTH, Progress
from .timers import iteration_timers

# RLlib (new API stack) result keys.
KEY_ITERATION = "training_iteration"
KEY_ENV_STEPS = "num_env_steps_sampled_lifetime"
KEY_ENV_RUNNERS = "env_runners"
KEY_RETURN_MEAN = "episode_return_mean"
KEY_NUM_EPISODES = "num_episodes"
KEY_TIME_SINCE_RESTORE = "time_since_restore"
KEY_TIME_THIS_ITER = "time_this_iter_s"
KEY_LEARNERS = "learners"
KEY_EPISODE_LEN_MEAN = "episode_len_mean"
SINGLE_MODULE = "default_policy"

# What tells a researcher whether the agent is learning before the return moves: the policy's entropy
# falling from uniform, the value function explaining the returns, the size of each update. Our name:
# RLlib's key in `result["learners"][<module>]`, the same for PPO, APPO and IMPALA on the new stack
# (`mean_kl_loss` is left out: it stays 0 unless the KL term is in the loss).
LEARNER_DIAGNOSTICS: dict[str, str] = {
    "entropy": "entropy",
    "policy_loss": "policy_loss",
    "vf_loss": "vf_loss",
    "vf_explained_var": "vf_explained_var",
    "grad_norm": "gradients_default_optimizer_global_norm",
    "learning_rate": "default_optimizer_learning_rate",
    "entropy_coeff": "curr_entropy_coeff",
}


@dataclass(frozen=True)
class ProgressRecord:
    """Figures after one iteration; counts (iteration, env steps, time) continue across attempts."""

    iteration: int
    episode_return_mean: float | None
    env_steps: int
    env_steps_per_second: float
    time_total_s: float
    checkpoint: str | None = None
    attempt: int | None = None
    timestamp: float = 0.0
    # Learner diagnostics (LEARNER_DIAGNOSTICS, "episode_len_mean"): what moves first when an agent learns.
    learner: dict[str, float] = field(default_factory=dict)
    # Seconds of this iteration by part (timers.py): sampling, the learner's updates and value pass, the whole
    # iteration, and the checkpoint saved after it, if one was.
    timers: dict[str, float] = field(default_factory=dict)
    # The greedy evaluation after a finished run (evaluate.Evaluation.summary), on the last record only.
    evaluation: dict[str, Any] | None = None

    def with_checkpoint(self, path: str | None) -> ProgressRecord:
        return replace(self, checkpoint=path)

    def json_line(self) -> str:
        """The line the driver prints to stdout and appends to progress.jsonl."""
        data = asdict(self)
        data["episode_return_mean"] = _round(self.episode_return_mean, 4)
        data["env_steps_per_second"] = _round(self.env_steps_per_second, 1)
        data["time_total_s"] = _round(self.time_total_s, 2)
        data["learner"] = {k: _round(v, 6) for k, v in self.learner.items()}
        return json.dumps(data, sort_keys=False)

    @classmethod
    def from_json(cls, line: str) -> ProgressRecord:
        data = json.loads(line)
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in fields})


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _number(value: Any) -> float | None:
    """RLlib reports nan (or leaves the key out) until an episode has finished."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's float32 is no float
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def record_from_result(
    result: dict[str, Any],
    *,
    previous_env_steps: int,
    time_offset_s: float,
    attempt: int | None,
    now: float | None = None,
) -> ProgressRecord:
    """Builds a record from `Algorithm.train()`'s result.

    `previous_env_steps` is the lifetime count after the previous iteration (or the checkpoint's,
    for the first iteration of a resumed run) so that steps/s covers exactly this iteration.
    `time_offset_s` is the training time of earlier attempts: RLlib restarts its clock on restore.
    """
    runners = result.get(KEY_ENV_RUNNERS) or {}
    steps = _number(result.get(KEY_ENV_STEPS))
    if steps is None:
        steps = _number(runners.get(KEY_ENV_STEPS))
    env_steps = int(steps or 0)
    this_iter = _number(result.get(KEY_TIME_THIS_ITER)) or 0.0
    rate = (env_steps - previous_env_steps) / this_iter if this_iter > 0 else 0.0
    since_restore = _number(result.get(KEY_TIME_SINCE_RESTORE)) or 0.0
    return ProgressRecord(
        iteration=int(result.get(KEY_ITERATION, 0)),
        episode_return_mean=_number(runners.get(KEY_RETURN_MEAN)),
        env_steps=env_steps,
        env_steps_per_second=max(0.0, rate),
        time_total_s=time_offset_s + since_restore,
        attempt=attempt,
        timestamp=time.time() if now is None else now,
        learner=learner_diagnostics(result),
        timers=iteration_timers(result, this_iter),
    )


def learner_diagnostics(result: dict[str, Any]) -> dict[str, float]:
    """The iteration's learner figures and mean episode length; what RLlib left out (or nan) is left out.

    A single-agent run has one module, `default_policy`, whose figures keep their plain names; any
    other module's are prefixed with its id, so a multi-module recipe reports them all, apart.
    """
    diagnostics: dict[str, float] = {}
    length = _number((result.get(KEY_ENV_RUNNERS) or {}).get(KEY_EPISODE_LEN_MEAN))
    if length is not None:
        diagnostics[KEY_EPISODE_LEN_MEAN] = length
    learners = result.get(KEY_LEARNERS)
    if not isinstance(learners, dict):
        return diagnostics
    for module, figures in sorted(learners.items()):
        if module.startswith("__") or not isinstance(figures, dict):  # __all_modules__: totals, timers
            continue
        prefix = "" if module == SINGLE_MODULE else f"{module}/"
        for name, key in LEARNER_DIAGNOSTICS.items():
            value = _number(figures.get(key))
            if value is not None:
                diagnostics[prefix + name] = value
    return diagnostics


def episodes_in(result: dict[str, Any]) -> int:
    """Episodes that ended during the iteration `result` covers (0 when RLlib leaves the count out)."""
    count = _number((result.get(KEY_ENV_RUNNERS) or {}).get(KEY_NUM_EPISODES))
    return int(count) if count is not None and count > 0 else 0


class ReturnWindow:
    """The mean return of the latest `episodes` episodes, from each iteration's mean and episode count.

    RLlib's new stack reports, per iteration, the mean over the episodes that ended in it: a few Pong
    games, or none. Reported as is, the return jumps by several points from one iteration to the next
    and a stop criterion fires on one lucky game. The window weights each iteration by its episodes and
    the oldest one only by the episodes still inside the window, so it is the mean of the latest
    `episodes` episodes up to that oldest iteration's spread.
    """

    def __init__(self, episodes: int = RETURN_WINDOW_EPISODES) -> None:
        self.episodes = episodes
        self._parts: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, mean: float | None, count: int) -> float | None:
        """Adds one iteration (count 0 with a mean counts as one episode) and returns the window's mean."""
        if mean is not None:
            count = max(1, count)
            self._parts.append((mean, count))
            self._total += count
            while self._total - self._parts[0][1] >= self.episodes:
                self._total -= self._parts.popleft()[1]
        return self.mean()

    def mean(self) -> float | None:
        """None until an episode has ended."""
        if not self._parts:
            return None
        newer = self._total - self._parts[0][1]
        weights = [min(self._parts[0][1], self.episodes - newer)] + [count for _, count in list(self._parts)[1:]]
        return sum(m * w for (m, _), w in zip(self._parts, weights, strict=True)) / sum(weights)


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


TRUNCATED = "..."  # what stands for the cut-off start of an overlong checkpoint path


def progress_wire(record: ProgressRecord) -> dict[str, Any]:
    """`status.progress` as the operator reads it from the head (GET /progress, the termination message).

    Built through the API's own model, so the operator parses it with the class that wrote it. Unknown figures
    are left out, not null: a resumed run that has not finished an episode yet has no return to show. The
    operator takes the answer as untrusted input within bounds (the model's, MAX_PROGRESS_BYTES), so a figure
    the model refuses is left out rather than spoiling the rest, and an overlong checkpoint path keeps its tail,
    the part that names the iteration.
    """
    fields: dict[str, Any] = {
        "attempt": record.attempt,
        "iteration": record.iteration,
        "episode_return_mean": _round(record.episode_return_mean, 4),
        "env_steps": record.env_steps,
        "env_steps_per_second": _round(record.env_steps_per_second, 1),
        "time_total_seconds": _round(record.time_total_s, 1),
        "last_checkpoint": None if record.checkpoint is None else _tail(record.checkpoint, MAX_PATH_LENGTH),
        "update_time": rfc3339(record.timestamp),
        "evaluation": record.evaluation,
    }
    try:
        return Progress(**fields).wire()
    except ValidationError as exc:
        refused = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        return Progress(**{k: v for k, v in fields.items() if k not in refused}).wire()


def _tail(text: str, limit: int) -> str:
    """The end of `text` in at most `limit` bytes of escaped JSON (so also at most `limit` characters).

    Bytes of the encoded form, not characters, bound the answer: json.dumps escapes a non-ASCII character
    into up to 12 bytes.
    """
    if len(json.dumps(text)) - 2 <= limit:
        return text
    budget = limit - len(TRUNCATED)
    start = len(text)
    while start > 0:
        cost = len(json.dumps(text[start - 1])) - 2
        if cost > budget:
            break
        budget -= cost
        start -= 1
    return TRUNCATED + text[start:]
