"""The model base class and cross-field rules that live in one place for both pydantic and CEL.

A rule is written once, as a CEL expression for the API server and a Python predicate for
`rljob render`/`rljob run`, side by side, so the two cannot drift apart silently: the unit tests
evaluate each rule's examples both ways.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: `cel` runs in the API server, `check` in Python; `message` is shown by both."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None  # e.g. ".script": where the API server points its error

    def crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, as `kubectl --validate=strict`.

    Strict types, as the API server's: "yes" is no boolean and "60" no integer, so `rljob run` refuses
    exactly what `kubectl apply` would.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        strict=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Model:
        broken = [r for r in type(self).rules if not r.check(self)]
        if broken:
            raise ValueError("; ".join(_with_path(r) for r in broken))
        return self

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes shows it: camelCase, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _with_path(rule: Rule) -> str:
    return f"{rule.field_path.lstrip('.')}: {rule.message}" if rule.field_path else rule.message
