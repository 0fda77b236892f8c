"""Following a job until it ends: one live line on a terminal, plain lines elsewhere."""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any

from ..api.vocabulary import TERMINAL_PHASES, Phase
from .cluster import CliError, Cluster, get_job

TERMINAL = TERMINAL_PHASES


def summary(job: dict[str, Any], now: datetime | None = None) -> str:
    st = job.get("status") or {}
    pr = st.get("progress") or {}
    parts = [st.get("phase") or Phase.PENDING]
    if st.get("workers"):
        parts.append(f"workers {st['workers']}")
    if pr.get("iteration") is not None:
        parts.append(f"iter {pr['iteration']}")
    if pr.get("episodeReturnMean") is not None:
        parts.append(f"return {pr['episodeReturnMean']:.2f}")
    if pr.get("envStepsPerSecond") is not None:
        parts.append(f"{pr['envStepsPerSecond']:,.0f} steps/s")
    if pr.get("envSteps") is not None:
        parts.append(f"{pr['envSteps']:,} steps")
    started = st.get("startTime")
    if started:
        end = st.get("completionTime")
        t1 = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else (now or datetime.now(timezone.utc))
        parts.append(duration((t1 - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()))
    return " | ".join(parts)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def follow(cluster: Cluster, name: str, interval: float = 2.0) -> int:
    tty = sys.stdout.isatty()
    last_line, last_phase = "", None
    try:
        while True:
            try:
                job = get_job(cluster, name)
            except CliError as exc:
                print(f"\nrljob: {exc}", file=sys.stderr)
                return 1
            st = job.get("status") or {}
            line = summary(job)
            if st.get("phase") != last_phase and st.get("phase"):
                if tty and last_line:
                    sys.stdout.write("\n")
                print(f"{name}: {st['phase']}" + (f" ({st.get('reason')}: {st.get('message')})" if st.get("reason") else ""))
                last_phase = st.get("phase")
            if tty:
                sys.stdout.write("\r\033[K" + line)
                sys.stdout.flush()
            elif line != last_line:
                print(line, flush=True)
            last_line = line
            if st.get("phase") in TERMINAL:
                if tty:
                    sys.stdout.write("\n")
                return 0 if st["phase"] == Phase.SUCCEEDED else 1
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on. Later: rljob status {name} -n {cluster.namespace}")
        return 130
