"""Kubernetes-style conditions: set one, keep lastTransitionTime unless its status changes."""
from __future__ import annotations

from datetime import datetime, timezone

from ..api.models import Condition
from ..api.vocabulary import ConditionType, Reason


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: bool,
    reason: Reason | str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Returns a new list: `conditions` with `type_` set. Order of types is kept stable for readers: the vocabulary's,
    then those of other writers."""
    value = "True" if status else "False"
    existing = {cond.type: cond for cond in conditions}
    old = existing.get(type_)
    transition = old.last_transition_time if old and old.status == value else timestamp(now)
    existing[type_] = Condition(
        type=type_, status=value, reason=reason, message=message,
        last_transition_time=transition, observed_generation=generation,
    )
    order = list(ConditionType)
    ordered = [existing[t] for t in order if t in existing]
    ordered += [cond for t, cond in existing.items() if t not in order]
    return ordered
