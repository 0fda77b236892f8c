"""Reading job manifests from files and the cluster, with one error line per problem, by field path."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .constants import API_VERSION, KIND
from .models import RLTrainingJob


class ManifestError(Exception):
    """An invalid manifest; `problems` holds one 'field.path: message' line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "literal[", "lax-or-strict", "json-or-python")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def _problems(exc: ValidationError) -> list[str]:
    seen: list[str] = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        line = f"{_loc(err['loc'])}: {msg}"
        if line not in seen:
            seen.append(line)
    return seen


def parse_job(obj: Any, source: str = "<object>") -> RLTrainingJob:
    if not isinstance(obj, dict):
        raise ManifestError(source, [f"(root): expected a mapping ({KIND} object), got {type(obj).__name__}"])
    if obj.get("kind") != KIND or obj.get("apiVersion") != API_VERSION:
        raise ManifestError(
            source,
            [f"(root): expected apiVersion {API_VERSION} and kind {KIND}, got {obj.get('apiVersion')!r} {obj.get('kind')!r}"],
        )
    try:
        return RLTrainingJob.model_validate(obj)
    except ValidationError as exc:
        raise ManifestError(source, _problems(exc)) from None


def load_job(text: str, source: str = "<stdin>") -> RLTrainingJob:
    """Reads exactly one RLTrainingJob from YAML text; other documents (e.g. a ConfigMap) are ignored."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(source, [f"not valid YAML: {' '.join(str(exc).split())}"]) from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if not jobs:
        if len(docs) == 1:
            return parse_job(docs[0], source)
        raise ManifestError(source, [f"no {KIND} document found"])
    if len(jobs) > 1:
        raise ManifestError(source, [f"{len(jobs)} {KIND} documents found; give one per file"])
    return parse_job(jobs[0], source)


def load_job_file(path: str | Path) -> RLTrainingJob:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ManifestError(str(path), [f"cannot read: {exc.strerror}"]) from None
    return load_job(text, str(path))
