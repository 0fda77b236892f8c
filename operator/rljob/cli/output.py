"""kubectl's output formats for the job commands: a table (plain or wide), the objects as JSON or YAML, or names.

Pure functions of the jobs as the API server returns them, so that every format is unit-tested without a
cluster and `list`, `list --watch` and `status` print the same columns.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import yaml

from ..api import constants as c
from ..api.vocabulary import Phase
from .follow import duration

FORMATS = ("wide", "json", "yaml", "name")


def add_output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, default=None,
                   help="wide: more columns; json, yaml: the objects as the API server has them; name: resource/name")


def since(stamp: str | None, until: str | None = None, now: datetime | None = None) -> str:
    """Time from `stamp` to `until` (or now) as 5s, 3m07s, 2h05m; '-' when the time is not known yet."""
    if not stamp:
        return "-"
    start = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    end = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else (now or datetime.now(timezone.utc))
    return duration((end - start).total_seconds())


def headers(wide: bool, all_namespaces: bool) -> list[str]:
    cols = ["NAME", "EXPERIMENT", "PHASE", "WORKERS", "ITERATION", "REWARD", "DURATION", "AGE"]
    if wide:
        cols += ["REASON", "ATTEMPTS", "ENV-STEPS", "STEPS/S", "HEAD-POD", "SUSPEND"]
    return (["NAMESPACE"] if all_namespaces else []) + cols


def row(job: dict[str, Any], wide: bool, all_namespaces: bool, now: datetime | None = None) -> list[str]:
    meta, spec = job["metadata"], job.get("spec") or {}
    st = job.get("status") or {}
    pr = st.get("progress") or {}
    reward = pr.get("episodeReturnMean")
    cells = [
        meta["name"], spec.get("experiment") or "-", st.get("phase") or Phase.PENDING, st.get("workers") or "-",
        str(pr.get("iteration", "-")), f"{reward:.2f}" if reward is not None else "-",
        since(st.get("startTime"), st.get("completionTime"), now), since(meta.get("creationTimestamp"), now=now),
    ]
    if wide:
        rate = pr.get("envStepsPerSecond")
        cells += [
            st.get("reason") or "-", str(st.get("attempts", "-")), str(pr.get("envSteps", "-")),
            f"{rate:.0f}" if rate is not None else "-", st.get("headPod") or "-", str(bool(spec.get("suspend"))).lower(),
        ]
    return ([meta.get("namespace") or ""] if all_namespaces else []) + cells


# The columns that only say how much time went by: `list --watch` prints a row again when anything else changed.
TIME_COLUMNS = ("DURATION", "AGE")


def change_key(cells: Sequence[str], head: Sequence[str]) -> tuple[str, ...]:
    return tuple(cell for cell, name in zip(cells, head, strict=True) if name not in TIME_COLUMNS)


def table(rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None) -> str:
    """Left-aligned columns three spaces apart, as `kubectl get` prints them."""
    widths = list(widths) if widths is not None else column_widths(rows)
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def column_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]


def resource_name(job: dict[str, Any]) -> str:
    """What `kubectl get -o name` prints: the resource's singular.group, a slash, the name."""
    return f"{c.SINGULAR}.{c.GROUP}/{job['metadata']['name']}"


def as_list(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as one document, the way kubectl prints them: a v1 List."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {"resourceVersion": ""}}


def document(obj: dict[str, Any], fmt: str) -> str:
    """One object (or List) as JSON or YAML, ending in a newline."""
    if fmt == "json":
        return json.dumps(obj, indent=4) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, width=120)
