"""`rljob list | status | logs | delete`: looking after jobs without writing kubectl queries."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

from ..api import constants as c
from ..api.vocabulary import Phase
from .cluster import CliError, Cluster, add_cluster_flags, connect, get_job, list_jobs
from .follow import duration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list training jobs: phase, reward, iterations, duration")
    p.add_argument("--experiment", help="only this experiment's runs")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="jobs of every namespace")
    add_cluster_flags(p)
    p.set_defaults(func=_guard(list_cmd))

    p = sub.add_parser("status", help="a job's phase, conditions, progress and recent events")
    p.add_argument("name")
    add_cluster_flags(p)
    p.set_defaults(func=_guard(status_cmd))

    p = sub.add_parser("logs", help="the driver's log (kept in status after its pod is gone)")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="stream the log while the driver runs")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    add_cluster_flags(p)
    p.set_defaults(func=_guard(logs_cmd))

    p = sub.add_parser("delete", help="delete jobs (and everything they own)")
    p.add_argument("names", nargs="+", metavar="NAME")
    add_cluster_flags(p)
    p.set_defaults(func=_guard(delete_cmd))


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(connect(args), args)
        except CliError as exc:
            print(f"rljob: {exc}", file=sys.stderr)
            return 1

    return run


def _since(stamp: str | None, until: str | None = None) -> str:
    if not stamp:
        return "-"
    start = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    end = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else datetime.now(timezone.utc)
    return duration((end - start).total_seconds())


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def list_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    jobs = list_jobs(cluster, "", args.all_namespaces)
    if args.experiment:  # by spec, not label: a job the operator has not labelled yet still counts
        jobs = [j for j in jobs if j["spec"].get("experiment") == args.experiment]
    if not jobs:
        where = "any namespace" if args.all_namespaces else f"namespace {cluster.namespace}"
        print(f"No {c.KIND}s in {where}" + (f" for experiment {args.experiment}" if args.experiment else "") + ".")
        return 0
    head = (["NAMESPACE"] if args.all_namespaces else []) + ["NAME", "EXPERIMENT", "PHASE", "WORKERS", "ITERATION", "REWARD",
                                                            "DURATION", "AGE"]
    rows = [head]
    for job in sorted(jobs, key=lambda j: j["metadata"].get("creationTimestamp", "")):
        st, pr = job.get("status") or {}, (job.get("status") or {}).get("progress") or {}
        reward = pr.get("episodeReturnMean")
        rows.append(([job["metadata"]["namespace"]] if args.all_namespaces else []) + [
            job["metadata"]["name"], job["spec"].get("experiment", "-"), st.get("phase") or Phase.PENDING,
            st.get("workers") or "-", str(pr.get("iteration", "-")), f"{reward:.2f}" if reward is not None else "-",
            _since(st.get("startTime"), st.get("completionTime")), _since(job["metadata"].get("creationTimestamp")),
        ])
    print(table(rows))
    return 0


def status_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    job = get_job(cluster, args.name)
    st = job.get("status") or {}
    pr = st.get("progress") or {}
    print(f"Name:        {args.name}   (namespace {cluster.namespace}, experiment {job['spec'].get('experiment')})")
    print(f"Phase:       {st.get('phase') or 'Pending'}" + (f"  {st.get('reason')}: {st.get('message')}" if st.get("reason") else ""))
    backoff = job["spec"].get("backoffLimit", 0)
    print(f"Attempt:     {st.get('attempts', '-')} (failed {st.get('failedAttempts', 0)}, backoffLimit {backoff})"
          f"   head pod {st.get('headPod', '-')}   workers {st.get('workers', '-')}")
    print(f"Started:     {st.get('startTime', '-')}   running for {_since(st.get('startTime'), st.get('completionTime'))}")
    if pr:
        print("Progress:    " + ", ".join(f"{k} {v}" for k, v in pr.items()))
    if st.get("conditions"):
        rows = [["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"]]
        rows += [[x["type"], x["status"], x.get("reason", ""), _since(x.get("lastTransitionTime")), x.get("message", "")]
                 for x in st["conditions"]]
        print("\n" + table(rows))
    events = cluster.call("list events", cluster.core().list_namespaced_event, cluster.namespace,
                          field_selector=f"involvedObject.name={args.name},involvedObject.kind={c.KIND}")
    items = sorted(events.items, key=lambda e: e.last_timestamp or e.event_time or datetime.min.replace(tzinfo=timezone.utc))
    if items:
        rows = [["AGE", "TYPE", "REASON", "MESSAGE"]]
        for e in items[-15:]:
            when = e.last_timestamp or e.event_time
            rows.append([_since(when.isoformat()) if when else "-", e.type or "", e.reason or "", e.message or ""])
        print("\n" + table(rows))
    return 0


def logs_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    job = get_job(cluster, args.name)
    st = job.get("status") or {}
    pod = st.get("headPod")
    core = cluster.core()
    if pod:
        try:
            if args.follow:
                stream = core.read_namespaced_pod_log(pod, cluster.namespace, follow=True, tail_lines=args.tail, _preload_content=False)
                for chunk in stream.stream():
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                return 0
            sys.stdout.write(core.read_namespaced_pod_log(pod, cluster.namespace, tail_lines=args.tail))
            return 0
        except ApiException as exc:
            if exc.status not in (400, 404):
                raise CliError(f"read log of pod {pod}: {exc.reason}") from None
    if st.get("driverLogTail"):
        print(f"# pod {pod or '(none)'} is gone; the last lines of the driver's log, kept by the operator:", file=sys.stderr)
        sys.stdout.write(st["driverLogTail"])
        return 0
    raise CliError(f"no driver log for {args.name} yet (phase {st.get('phase') or 'Pending'})")


def delete_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    from kubernetes import client

    for name in args.names:
        cluster.call(f"delete {c.SINGULAR} {name}", cluster.custom().delete_namespaced_custom_object, c.GROUP, c.VERSION,
                     cluster.namespace, c.PLURAL, name, body=client.V1DeleteOptions(propagation_policy="Background"))
        print(f"{c.SINGULAR}.{c.GROUP} \"{name}\" deleted (its pods, services and policies go with it)")
    return 0
