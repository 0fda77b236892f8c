"""RLlib's PPO and APPO torch learners, logging the seconds of their updates and value passes per iteration.

The timed part is TorchLearner's `_update` (one minibatch's forward pass, loss, backward pass and optimizer
step; for APPO what its learner thread runs per batch). The value pass is the module's own count of its
full-batch passes outside the loss (GAE's, see atari_module), taken at each update. What the learner does
besides (building the train batch from episodes, metrics) is neither and stays in the iteration's rest.
tests/unit/test_rllib_seams.py pins the RLlib members this relies on.
"""
from __future__ import annotations

import time
from typing import Any

from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

from ..timers import ALL_MODULES, LEARN_KEY, VALUE_PASS_KEY


class _Timed:
    metrics: Any
    module: Any

    def _update(self, batch: dict[str, Any], **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = super()._update(batch, **kwargs)  # type: ignore[misc]
        self.metrics.log_value((ALL_MODULES, LEARN_KEY), time.perf_counter() - started, reduce="sum")
        value_pass = sum(module.take_value_pass_seconds() for module in self.module.values()
                         if hasattr(module, "take_value_pass_seconds"))
        if value_pass:
            self.metrics.log_value((ALL_MODULES, VALUE_PASS_KEY), value_pass, reduce="sum")
        return out


class TimedPPOLearner(_Timed, PPOTorchLearner):
    """PPOTorchLearner with per-iteration timers."""


class TimedAPPOLearner(_Timed, APPOTorchLearner):
    """APPOTorchLearner with per-iteration timers."""

