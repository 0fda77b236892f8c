"""`rljob list | status | logs | delete`: looking after jobs without writing kubectl queries.

`list` and `status` take kubectl's `-o wide|json|yaml|name`, `list` and `delete` its `-l` label selectors, and
`list -w` prints a row whenever a job changes, like `kubectl get -w`.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..api import constants as c
from .cluster import CliError, Cluster, add_cluster_flags, explain, get_job, guarded, list_jobs
from .output import (
    add_output_flag,
    as_list,
    change_key,
    column_widths,
    document,
    headers,
    resource_name,
    row,
    since,
    table,
)
from .raylogs import RAY_LOG_DIR, ray_logs_cmd

# Seconds the API server keeps one watch open; the CLI then watches again from the last version it saw.
WATCH_SECONDS = 240


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list training jobs: phase, reward, iterations, duration")
    p.add_argument("--experiment", help="only this experiment's runs")
    p.add_argument("-l", "--selector", default="", help="label selector, e.g. rljob.dev/experiment=pong,team!=a")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="jobs of every namespace")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after the list, print a job again whenever it changes (until Ctrl-C)")
    add_output_flag(p)
    add_cluster_flags(p)
    p.set_defaults(func=guarded(list_cmd))

    p = sub.add_parser("status", help="a job's phase, conditions, progress and recent events")
    p.add_argument("name")
    add_output_flag(p)
    add_cluster_flags(p)
    p.set_defaults(func=guarded(status_cmd))

    p = sub.add_parser("logs", help="the driver's log (kept in status after its pod is gone), or Ray's logs of every pod",
                       description="The driver's log of the current attempt, or of --attempt N (its head pod's, else the "
                       "tail the operator kept in status). --ray copies Ray's own logs and the container logs of the "
                       "head and every worker pod, while they run, to --dest.")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="stream the log while the driver runs")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    p.add_argument("--attempt", type=int, default=None, metavar="N",
                   help="the driver's log of attempt N (from 1; `rljob status` shows the current one)")
    p.add_argument("--ray", action="store_true",
                   help=f"copy Ray's logs ({RAY_LOG_DIR}) and the container logs of every pod of the job to --dest")
    p.add_argument("--dest", type=Path, default=None, help="where --ray writes (default ./NAME-ray-logs/POD/...)")
    add_cluster_flags(p)
    p.set_defaults(func=guarded(logs_cmd))

    p = sub.add_parser("delete", help="delete jobs (and everything they own)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-l", "--selector", default="", help="delete the jobs this label selector matches instead")
    add_cluster_flags(p)
    p.set_defaults(func=guarded(delete_cmd))



def _selected(jobs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    # By spec, not label: a job the operator has not labelled yet still counts.
    if args.experiment:
        jobs = [j for j in jobs if (j.get("spec") or {}).get("experiment") == args.experiment]
    return sorted(jobs, key=lambda j: j["metadata"].get("creationTimestamp", ""))


def list_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.watch:
        return watch_cmd(cluster, args)
    jobs = _selected(list_jobs(cluster, args.selector, args.all_namespaces), args)
    fmt = args.output
    if fmt in ("json", "yaml"):
        sys.stdout.write(document(as_list(jobs), fmt))
        return 0
    if fmt == "name":
        for job in jobs:
            print(resource_name(job))
        return 0
    if not jobs:
        where = "any namespace" if args.all_namespaces else f"namespace {cluster.namespace}"
        print(f"No {c.KIND}s in {where}" + (f" for experiment {args.experiment}" if args.experiment else "")
              + (f" matching {args.selector}" if args.selector else "") + ".")
        return 0
    wide = fmt == "wide"
    print(table([headers(wide, args.all_namespaces)] + [row(j, wide, args.all_namespaces) for j in jobs]))
    return 0


class _Printer:
    """Prints one job per event in the chosen format; a table keeps the first widths, as `kubectl get -w` does."""

    def __init__(self, fmt: str | None, all_namespaces: bool) -> None:
        self.fmt, self.all_namespaces = fmt, all_namespaces
        self.head = headers(fmt == "wide", all_namespaces)
        self.widths: list[int] | None = None
        self.last: dict[str, tuple[str, ...]] = {}

    def start(self, jobs: list[dict[str, Any]]) -> None:
        if self.fmt in (None, "wide"):
            rows = [row(j, self.fmt == "wide", self.all_namespaces) for j in jobs]
            self.widths = column_widths([self.head, *rows])
            print(table([self.head], self.widths), flush=True)
        for job in jobs:
            self.show(job)

    def show(self, job: dict[str, Any], deleted: bool = False) -> None:
        key = f"{job['metadata'].get('namespace')}/{job['metadata']['name']}"
        if self.fmt in ("json", "yaml"):
            text = document(job, self.fmt)
            sys.stdout.write(text if self.fmt == "json" else "---\n" + text)
        elif self.fmt == "name":
            print(resource_name(job))
        else:
            cells = row(job, self.fmt == "wide", self.all_namespaces)
            seen = change_key(cells, self.head)
            if self.last.get(key) == seen and not deleted:
                return  # only the clocks moved: a status heartbeat, nothing to show
            self.last[key] = seen
            assert self.widths is not None
            widths = [max(w, len(cell)) for w, cell in zip(self.widths, cells, strict=True)]
            print(table([cells], widths), flush=True)
        if deleted:
            self.last.pop(key, None)
        sys.stdout.flush()


def watch_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    """The list, then every change, until interrupted; after an expired watch it lists again, as informers do."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    printer = _Printer(args.output, args.all_namespaces)
    api = cluster.custom()
    if args.all_namespaces:
        fn, fn_args = api.list_cluster_custom_object, (c.GROUP, c.VERSION, c.PLURAL)
    else:
        fn, fn_args = api.list_namespaced_custom_object, (c.GROUP, c.VERSION, cluster.namespace, c.PLURAL)
    listed = cluster.call(f"list {c.PLURAL}", fn, *fn_args, label_selector=args.selector)
    version = listed["metadata"]["resourceVersion"]
    printer.start(_selected(listed.get("items", []), args))
    failures = 0
    while True:
        try:
            for event in watch.Watch().stream(fn, *fn_args, label_selector=args.selector, resource_version=version,
                                              timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True):
                obj = event["raw_object"]
                version = obj.get("metadata", {}).get("resourceVersion", version)
                failures = 0
                if event["type"] == "BOOKMARK" or not _selected([obj], args):
                    continue
                printer.show(obj, deleted=event["type"] == "DELETED")
        except ApiException as exc:
            if exc.status != 410:
                raise CliError(f"watch {c.PLURAL}: {exc.reason}") from None
            # The version is too old to watch from: list again and show what changed meanwhile.
            listed = cluster.call(f"list {c.PLURAL}", fn, *fn_args, label_selector=args.selector)
            version = listed["metadata"]["resourceVersion"]
            for job in _selected(listed.get("items", []), args):
                printer.show(job)
        except (HTTPError, OSError) as exc:
            failures += 1
            if failures > 5:
                raise CliError(f"lost the watch on {cluster.host}: {type(exc).__name__}: {exc}") from None
            time.sleep(min(2.0 * failures, 10.0))


def status_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    job = get_job(cluster, args.name)
    if args.output in ("json", "yaml"):
        sys.stdout.write(document(job, args.output))
        return 0
    if args.output == "name":
        print(resource_name(job))
        return 0
    st = job.get("status") or {}
    pr = st.get("progress") or {}
    print(f"Name:        {args.name}   (namespace {cluster.namespace}, experiment {job['spec'].get('experiment')})")
    print(f"Phase:       {st.get('phase') or 'Pending'}" + (f"  {st.get('reason')}: {st.get('message')}" if st.get("reason") else ""))
    backoff = job["spec"].get("backoffLimit", 0)
    print(f"Attempt:     {st.get('attempts', '-')} (failed {st.get('failedAttempts', 0)}, backoffLimit {backoff})"
          f"   head pod {st.get('headPod', '-')}   workers {st.get('workers', '-')}")
    print(f"Started:     {st.get('startTime', '-')}   running for {since(st.get('startTime'), st.get('completionTime'))}")
    if pr:
        print("Progress:    " + ", ".join(f"{k} {v}" for k, v in pr.items()))
    wide = args.output == "wide"
    if st.get("conditions"):
        rows = [["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"] + (["GENERATION"] if wide else [])]
        rows += [[x["type"], x["status"], x.get("reason", ""), since(x.get("lastTransitionTime")), x.get("message", "")]
                 + ([str(x.get("observedGeneration", "-"))] if wide else []) for x in st["conditions"]]
        print("\n" + table(rows))
    if wide:
        _print_pods(cluster, args.name)
    events = cluster.call("list events", cluster.core().list_namespaced_event, cluster.namespace,
                          field_selector=f"involvedObject.name={args.name},involvedObject.kind={c.KIND}")
    items = sorted(events.items, key=lambda e: e.last_timestamp or e.event_time or datetime.min.replace(tzinfo=timezone.utc))
    if items:
        rows = [["AGE", "TYPE", "REASON", "MESSAGE"]]
        for e in items if wide else items[-15:]:
            when = e.last_timestamp or e.event_time
            rows.append([since(when.isoformat()) if when else "-", e.type or "", e.reason or "", e.message or ""])
        print("\n" + table(rows))
    return 0


def _print_pods(cluster: Cluster, name: str) -> None:
    """The job's pods with their phase and node: what `-o wide` adds to a pod listing, for all of a job's pods."""
    pods = cluster.call("list pods", cluster.core().list_namespaced_pod, cluster.namespace,
                        label_selector=f"{c.LABEL_JOB}={name}")
    if not pods.items:
        return
    rows = [["POD", "ROLE", "PHASE", "NODE", "IP", "AGE"]]
    for pod in sorted(pods.items, key=lambda p: p.metadata.name):
        created = pod.metadata.creation_timestamp
        rows.append([pod.metadata.name, (pod.metadata.labels or {}).get(c.LABEL_ROLE, "-"), pod.status.phase or "-",
                     pod.spec.node_name or "-", pod.status.pod_ip or "-", since(created.isoformat()) if created else "-"])
    print("\n" + table(rows))


def logs_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    if args.dest is not None and not args.ray:
        raise CliError("logs: --dest goes with --ray")
    if args.ray and (args.attempt is not None or args.follow or args.tail is not None):
        raise CliError("logs: --ray copies whole files of every pod; --attempt, --follow and --tail are the driver log's")
    job = get_job(cluster, args.name)
    if args.ray:
        return ray_logs_cmd(cluster, args, job)
    if args.attempt is not None:
        return attempt_log(cluster, args, job)
    st = job.get("status") or {}
    pod = st.get("headPod")
    if pod:
        try:
            _print_pod_log(cluster, pod, args.follow, args.tail)
            return 0
        except ApiException as exc:
            if exc.status not in (400, 404):
                raise CliError(f"read log of pod {pod}: {exc.reason}") from None
    if st.get("driverLogTail"):
        print(f"# pod {pod or '(none)'} is gone; the last lines of the driver's log, kept by the operator:", file=sys.stderr)
        sys.stdout.write(st["driverLogTail"])
        return 0
    raise CliError(f"no driver log for {args.name} yet (phase {st.get('phase') or 'Pending'})")


def _print_pod_log(cluster: Cluster, pod: str, follow: bool, tail: int | None) -> None:
    """Writes a head pod's log, streamed with `follow`; the client's ApiException when it cannot be read."""
    core = cluster.core()
    if follow:
        stream = core.read_namespaced_pod_log(pod, cluster.namespace, follow=True, tail_lines=tail, _preload_content=False)
        for chunk in stream.stream():
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        return
    sys.stdout.write(core.read_namespaced_pod_log(pod, cluster.namespace, tail_lines=tail))


def attempt_log(cluster: Cluster, args: argparse.Namespace, job: dict[str, Any]) -> int:
    """Attempt N's driver log: its head pod's (the operator keeps a finished attempt's head pod until the job is
    deleted), else the tail the operator kept in status when the attempt ended; else which attempts have one."""
    from kubernetes.client.exceptions import ApiException

    name, n = args.name, args.attempt
    st = job.get("status") or {}
    pods = head_pods(cluster, job)
    kept = {entry["attempt"]: entry["logTail"] for entry in st.get("attemptLogs") or []}
    unreadable = ""
    if n in pods:
        try:
            _print_pod_log(cluster, pods[n], args.follow, args.tail)
            return 0
        except ApiException as exc:  # e.g. its node is gone: the kubelet that had the log
            unreadable = f"read log of pod {pods[n]}: {explain(exc, cluster)}"
    if n in kept:
        print(f"# the log of attempt {n}'s head pod is {'unreadable' if unreadable else 'gone'}; the last lines of its "
              "driver's log, kept by the operator:", file=sys.stderr)
        sys.stdout.write(last_lines(kept[n], args.tail))
        return 0
    if unreadable:
        raise CliError(unreadable)
    raise CliError(no_attempt_log(name, n, st.get("attempts"), pods, kept))


def head_pods(cluster: Cluster, job: dict[str, Any]) -> dict[int, str]:
    """The job's head pods by attempt (from their attempt label), this instance's only (not a deleted namesake's)."""
    name = job["metadata"]["name"]
    selector = f"{c.LABEL_JOB}={name},{c.LABEL_ROLE}={c.ROLE_HEAD}"
    if job["metadata"].get("uid"):
        selector += f",{c.LABEL_CONTROLLER_UID}={job['metadata']['uid']}"
    listed = cluster.call(f"list head pods of {name}", cluster.core().list_namespaced_pod, cluster.namespace,
                          label_selector=selector)
    out = {}
    for pod in listed.items:
        label = (pod.metadata.labels or {}).get(c.LABEL_ATTEMPT, "")
        if label.isdigit():
            out[int(label)] = pod.metadata.name
    return out


def last_lines(text: str, tail: int | None) -> str:
    """`--tail N` of a kept text, as the API server cuts a pod's log."""
    if tail is None:
        return text
    return "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""


def no_attempt_log(name: str, n: int, attempts: int | None, pods: dict[int, str], kept: dict[int, str]) -> str:
    """Why attempt N has no log to show, and which attempts have one."""

    def where(attempt: int) -> str:
        return f"{attempt} (pod {pods[attempt]})" if attempt in pods else f"{attempt} (tail kept in status)"

    listing = ", ".join(where(a) for a in sorted(set(pods) | set(kept))) or "none"
    if attempts is None or not 1 <= n <= attempts:
        return f"{c.SINGULAR} {name} has no attempt {n} (it has had {attempts or 0}); driver logs of attempts: {listing}"
    return f"the driver log of attempt {n} of {name} is gone (its head pod and the tail kept in status); driver logs of attempts: {listing}"


def delete_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    from kubernetes import client

    if bool(args.names) == bool(args.selector):
        raise CliError("delete: name the jobs, or give -l SELECTOR (not both)")
    names = args.names or [j["metadata"]["name"] for j in list_jobs(cluster, args.selector)]
    if not names:
        print(f"No {c.KIND}s in namespace {cluster.namespace} matching {args.selector}.")
        return 0
    for name in names:
        cluster.call(f"delete {c.SINGULAR} {name}", cluster.custom().delete_namespaced_custom_object, c.GROUP, c.VERSION,
                     cluster.namespace, c.PLURAL, name, body=client.V1DeleteOptions(propagation_policy="Background"))
        print(f"{c.SINGULAR}.{c.GROUP} \"{name}\" deleted (its pods, services and policies go with it)")
    return 0
