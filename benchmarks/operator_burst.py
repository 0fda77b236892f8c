"""A burst of RLTrainingJobs, from `kubectl apply` to every Ray cluster Running, against the no-operator floor.

Not a test: it measures. Each mode runs on a fresh control plane of the project's own (etcd, kube-apiserver,
controller manager, scheduler, kwok nodes with enough CPUs, memory and GPUs that no node's capacity limits):

- floor: no operator; this process creates the very pods the operator would (each job's head pod and its
  workers as plain pods, from the same builders), with 10 threads. What the API server, scheduler and kwok
  allow on this machine.
- floor with StatefulSets: the same, but each job's workers as the operator's StatefulSet: what the
  controller manager's StatefulSet controller (and its client's rate limit) adds, with no operator.
- floor with the job's objects: no operator; this process creates each job and then every object the operator
  would create for it (two NetworkPolicies, head Service, worker StatefulSet, head pod: `resources.build`, owned by
  the job), one job after another in each of 10 threads, and deletes them as
  the operator does (the jobs, and beside that their head Services, StatefulSets and pods). What a job consists of
  costs this control plane with no operator: the time above it is the operator's own.
- operator: `rljob operator` as the Helm chart runs it (its flags, its ServiceAccount's token and RBAC: no admin
  certificate), except that it reads no head's progress (`--progress-interval 0`: the fake pods' addresses lead
  nowhere); this process applies the jobs with 10 threads.

    .venv/bin/python benchmarks/operator_burst.py --jobs 100 --workers 10
    .venv/bin/python benchmarks/operator_burst.py --jobs 1000 --workers 2
    .venv/bin/python benchmarks/operator_burst.py --jobs 1000 --workers 2 --rounds 3  # medians: runs vary

It prints one figure per line, each mode's and the operator's as a ratio to the floor: all Running (seconds
from the first apply until the last job's cluster is up: the job Running for the operator, all its pods Ready
for the floor), p50/p99 apply-to-Running per job, the operator's peak RSS and CPU seconds, delete-to-no-pods
and the pods left after it; per mode, the write requests the API server served per job up to all Running (its own
count, by verb and resource: who makes the control plane work), those from the delete until no pod is left, and
each control-plane process's CPU seconds, to all Running and from the delete until no pod is left.
Deleting is one deletecollection per kind: of the jobs in operator mode (the API server deletes them one after
another, and each job's pods follow it; the time until the last job is gone is printed too), of the StatefulSets
and pods for the floors, and for the floor with the job's objects of the jobs in one thread and of the head
Services, StatefulSets and pods, in that order, in another. Pod IPs come from a routable-looking range, as on a
real cluster (see POD_CIDR).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pong_time_to_reward import cpu_model

from rljob import resources
from rljob.api import constants as c
from rljob.api import metrics as rljob_metrics
from rljob.api import parse_job
from rljob.api.crd import crd_yaml
from rljob.api.vocabulary import Phase
from rljob.controller.kube import collection_path

# Run as a script, sys.path starts with benchmarks/ only; the test cluster is development tooling that lives in
# the repository's `tests` package, not in the installed rljob.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from tests.cluster.chart import OPERATOR_NS, ChartOperator
from tests.cluster.controlplane import ControlPlane

NAMESPACE = "burst"
THREADS = 10
PODS_PER_NODE = 250
PODS_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods"
STS_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets"
SERVICES_PATH = f"/api/v1/namespaces/{NAMESPACE}/services"
MODES = ("floor", "floor-statefulset", "floor-job", "operator")
LABELS = {"floor": "floor", "floor-statefulset": "floor with StatefulSets", "floor-job": "floor with the job's objects",
          "operator": "operator"}
# Pod IPs from the benchmarking range (RFC 2544), as a real cluster's are routable ones: the test clusters' default,
# a loopback range, is refused in Endpoints and EndpointSlices, and the controller manager then retries every
# job's head Service over and over (a dozen failed updates and warning events per job), load a real cluster has not.
POD_CIDR = "198.18.0.0/16"


def job_manifest(name: str, workers: int) -> dict[str, Any]:
    """1 CPU and 2Gi per pod, one GPU on the head, no checkpoint volume."""
    return {
        "apiVersion": c.API_VERSION, "kind": c.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "entrypoint": {"recipe": "pong"},
            "head": {"gpus": 1, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"},
            "workers": {"replicas": workers, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"},
            "clusterCoordinationTimeoutSeconds": 3600,
        },
    }


def floor_objects(name: str, workers: int, statefulset: bool) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, body): the head pod the operator would create for this job and its workers, as plain
    pods or as the operator's StatefulSet; no owner, the namespace's default ServiceAccount (the floor creates
    nothing else)."""
    job = parse_job({**job_manifest(name, workers), "metadata": {"name": name, "namespace": NAMESPACE, "uid": "floor"}})
    ctx = resources.BuildContext()
    sts = resources.workers_statefulset(job, ctx)
    objs = [resources.head_pod(job, ctx, 1, "")]
    if statefulset:
        objs.append(sts)
    else:
        for i in range(workers):
            template = json.loads(json.dumps(sts["spec"]["template"]))
            meta = template["metadata"]
            meta.update(name=f"{sts['metadata']['name']}-{i}", namespace=NAMESPACE)
            objs.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
    for obj in objs:
        obj["metadata"].pop("ownerReferences", None)
        pod_spec = obj["spec"]["template"]["spec"] if obj["kind"] == "StatefulSet" else obj["spec"]
        pod_spec["serviceAccountName"] = "default"
    return [(PODS_PATH if o["kind"] == "Pod" else STS_PATH, o) for o in objs]


def job_objects(created: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, body): every object the operator creates for this job (as created, with its uid), in the
    order it creates them: its static children, then the worker StatefulSet and the head pod."""
    job = parse_job(created)
    ctx = resources.BuildContext(operator_namespace=OPERATOR_NS)
    return [(collection_path(obj["apiVersion"], obj["kind"], NAMESPACE), obj) for obj in resources.build(job, ctx)]


class Watcher:
    """Reads one watch stream (pods or jobs) as raw JSON lines; notes when each object first met `done`."""

    def __init__(self, api: client.ApiClient, path: str, done: Callable[[dict[str, Any]], bool]) -> None:
        self.api, self.path, self.done = api, path, done
        self.first_done: dict[str, float] = {}
        self.live: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = False
        self.failures = 0
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Watcher:
        WATCHERS.append(self)
        self.thread.start()
        return self

    def _run(self) -> None:
        rv = ""
        while not self.stopping:
            query = [("watch", "true"), ("timeoutSeconds", "60"), ("allowWatchBookmarks", "true")]
            if rv:
                query.append(("resourceVersion", rv))
            try:
                resp = self.api.call_api(*self.api.param_serialize("GET", self.path, query_params=query,
                                                                   auth_settings=["BearerToken"]))
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status} {resp.reason}")
                for line in _lines(resp.response):
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event["type"] == "BOOKMARK":
                        continue
                    if event["type"] == "ERROR":
                        rv = ""
                        break
                    name = obj["metadata"]["name"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.live.discard(name)
                            continue
                        self.live.add(name)
                        if name not in self.first_done and self.done(obj):
                            self.first_done[name] = time.monotonic()
                self.failures = 0
            except Exception as exc:  # a dropped stream: resume from the last version seen
                self.failures += 1
                if self.failures > 20:
                    self.error = f"watch {self.path} keeps failing: {exc}"
                    return
                if not self.stopping:
                    print(f"# watch {self.path}: {exc}; resuming", file=sys.stderr)
                    time.sleep(0.2)

    def stop(self) -> None:
        self.stopping = True


def _lines(resp: Any) -> Any:
    buf = b""
    for chunk in resp.stream(65536):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line


def pods_ready_per_job(first_ready: dict[str, float], applied: dict[str, float], pods_per_job: int) -> dict[str, float]:
    """When each job's last pod first became Ready, for the jobs whose pods all did."""
    at: dict[str, float] = {}
    count: dict[str, int] = {}
    for pod, when in first_ready.items():
        job = pod.rsplit("-", 2)[0] if "-workers-" in pod else pod.rsplit("-head-", 1)[0]
        at[job] = max(at.get(job, 0.0), when)
        count[job] = count.get(job, 0) + 1
    return {job: when for job, when in at.items() if job in applied and count[job] == pods_per_job}


def write_job_table(api: client.ApiClient, jobs_path: str, out: Path, t0: float, applied: dict[str, float],
                    pods_ready: dict[str, float], running: dict[str, float]) -> None:
    """One line per job, seconds from the first apply as this benchmark's watches saw them, and the API server's own
    record: when the job's pods turned Ready (their Ready conditions) and when it turned Running (its ClusterReady
    condition), both to the second. A late line in both says the operator was late; in the watches only, the watch."""
    def items(path: str) -> list[dict[str, Any]]:
        resp = api.call_api(*api.param_serialize("GET", path, auth_settings=["BearerToken"]))
        return json.loads(resp.read())["items"]

    def stamp(conditions: list[dict[str, Any]] | None, kind: str) -> str:
        return next((cd.get("lastTransitionTime") or "" for cd in conditions or [] if cd.get("type") == kind), "")

    pods_at: dict[str, str] = {}
    for pod in items(PODS_PATH):
        job = (pod["metadata"].get("labels") or {}).get(c.LABEL_JOB, "")
        pods_at[job] = max(pods_at.get(job, ""), stamp(pod.get("status", {}).get("conditions"), "Ready"))
    with out.open("w") as f:
        f.write("job,applied,pods Ready (watch),Running (watch),pods Ready (server),Running (server)\n")
        for job in items(jobs_path):
            name = job["metadata"]["name"]
            ran = stamp((job.get("status") or {}).get("conditions"), "ClusterReady")
            seen = [f"{d[name] - t0:.1f}" if name in d else "" for d in (applied, pods_ready, running)]
            f.write(",".join([name, *seen, pods_at.get(name, ""), ran]) + "\n")


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(cd.get("type") == "Ready" and cd.get("status") == "True" for cd in pod.get("status", {}).get("conditions") or [])


def job_running(job: dict[str, Any]) -> bool:
    return (job.get("status") or {}).get("phase") == Phase.RUNNING


WATCHERS: list[Watcher] = []


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        broken = [w.error for w in WATCHERS if w.error]
        if broken:
            raise RuntimeError(broken[0])
        if check():
            return True
        time.sleep(interval)
    return check()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def qps_flags(qps: int | None) -> tuple[str, ...]:
    return () if qps is None else (f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}")


def control_plane(workdir: Path, jobs: int, workers: int, controller_qps: int | None = None,
                  profiling: bool = False, scheduler_qps: int | None = None) -> ControlPlane:
    """Nodes enough that no node's capacity limits: at most PODS_PER_NODE pods each, CPUs and memory to spare. With
    ``controller_qps``, the controller manager's client (the StatefulSet controller's and the garbage collector's) may
    send that many requests per second instead of the default 20, with bursts of twice as many; with
    ``scheduler_qps``, the scheduler's (one binding per pod) instead of its default 50, burst 100."""
    cpu_nodes = math.ceil(jobs * workers / PODS_PER_NODE) + 1
    gpu_nodes = math.ceil(jobs / PODS_PER_NODE) + 1
    return ControlPlane(workdir, cpu_nodes=cpu_nodes, gpu_nodes=gpu_nodes, node_cpu=str(PODS_PER_NODE * 2),
                        node_memory=f"{PODS_PER_NODE * 4}Gi", node_pods=PODS_PER_NODE, gpus_per_node=PODS_PER_NODE,
                        start_timeout=300, controller_manager_args=qps_flags(controller_qps),
                        scheduler_args=qps_flags(scheduler_qps), pod_cidr=POD_CIDR, profiling=profiling)


def wait_for_garbage_collector(cp: ControlPlane, api: client.ApiClient, jobs_path: str) -> None:
    """The garbage collector learns of a new CRD on its next discovery pass (up to 30 s): until then deleting a
    job leaves its children. A probe job and a ConfigMap it owns, deleted until the ConfigMap goes with it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        probe = api.call_api(*api.param_serialize(
            "POST", jobs_path, body={**job_manifest("gc-probe", 0), "spec": {"entrypoint": {"recipe": "pong"}}},
            header_params={"Content-Type": "application/json"}, auth_settings=["BearerToken"]))
        uid = json.loads(probe.read())["metadata"]["uid"]
        owned = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gc-probe", "namespace": NAMESPACE,
                 "ownerReferences": [{"apiVersion": c.API_VERSION, "kind": c.KIND, "name": "gc-probe", "uid": uid}]}}
        post(api, f"/api/v1/namespaces/{NAMESPACE}/configmaps", owned)
        cp.kubectl("delete", c.PLURAL, "gc-probe", "-n", NAMESPACE, "--wait=true")
        if wait_until(lambda: cp.kubectl("get", "configmap", "gc-probe", "-n", NAMESPACE, check=False).returncode != 0, 10, 0.5):
            return
        # The collector may have caught up between the wait and now: gone is as good as deleted.
        cp.kubectl("delete", "configmap", "gc-probe", "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    raise RuntimeError("the garbage collector did not learn of the CRD within 120 s")


def api_client(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = THREADS * 2
    return client.ApiClient(cfg)


def post(api: client.ApiClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The object as created."""
    for attempt in range(20):
        try:
            resp = api.call_api(*api.param_serialize("POST", path, body=body,
                                                     header_params={"Content-Type": "application/json"},
                                                     auth_settings=["BearerToken"]))
            return json.loads(resp.read())
        except ApiException as exc:
            if exc.status != 429 or attempt == 19:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


PROFILE_CHUNK_SECONDS = 5
PROFILE_PATH = f"/debug/pprof/profile?seconds={PROFILE_CHUNK_SECONDS}"


class CpuProfiler:
    """A Go component's CPU profile (pprof) from the first apply until stopped at all Running, in consecutive chunks
    of PROFILE_CHUNK_SECONDS (Go profiles for a duration fixed up front; `go tool pprof` merges the files it is
    given): where kube-apiserver's and kube-controller-manager's time goes, which is where a burst's time goes once
    the operator is cheap. `fetch` returns one chunk."""

    def __init__(self, name: str, fetch: Callable[[], bytes], folder: Path) -> None:
        self.fetch, self.folder = fetch, folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-profile", daemon=True)

    def start(self) -> CpuProfiler:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            (self.folder / f"{n:03d}.pprof").write_bytes(self.fetch())

    def stop(self) -> None:
        """Ends after the chunk under way (at most PROFILE_CHUNK_SECONDS more)."""
        self._stop.set()
        self._thread.join(PROFILE_CHUNK_SECONDS + 60)


def control_plane_profilers(cp: ControlPlane, api: client.ApiClient, folder: Path, mode: str,
                            window: str = "") -> list[CpuProfiler]:
    def apiserver() -> bytes:
        return api.call_api(*api.param_serialize("GET", PROFILE_PATH, auth_settings=["BearerToken"]),
                            _request_timeout=PROFILE_CHUNK_SECONDS + 60).read()

    def controller_manager() -> bytes:
        return cp.component_get("controller-manager", PROFILE_PATH, timeout=PROFILE_CHUNK_SECONDS + 60)

    return [CpuProfiler(name, fetch, folder / f"{mode}-{window}{name}-cpu").start()
            for name, fetch in (("kube-apiserver", apiserver), ("kube-controller-manager", controller_manager))]


def py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy's raw (collapsed) stacks of the operator until stop_py_spy: `--profile` records the burst and the
    delete apart, as the operator's work in each differs."""
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(output)])


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)
    spy.wait(60)


def process_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return cpu, hwm / 1024


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def api_writes(api: client.ApiClient) -> dict[str, float]:
    """The API server's own count of the write requests it has served, by resource and verb (its /metrics)."""
    resp = api.call_api(*api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
    counts: dict[str, float] = {}
    for line in resp.read().decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.rindex("}")].split(","))
        verb, resource = labels.get("verb", "").strip('"'), labels.get("resource", "").strip('"')
        subresource = labels.get("subresource", '""').strip('"')
        if verb in WRITE_VERBS:
            key = f"{verb} {resource}" + (f"/{subresource}" if subresource else "")
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def writes_per_job(prefix: str, before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """The writes between two counts, per job, keyed `prefix verb resource`; those under half a write per job are
    left out (the odd lease renewal or event is not the burst's)."""
    return {f"{prefix} {key}": (count - before.get(key, 0.0)) / jobs for key, count in after.items()
            if count - before.get(key, 0.0) >= jobs / 2}


def reconciles(metrics_url: str) -> float:
    """How many reconciles the operator has run (its reconcile-duration histogram's count)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"{rljob_metrics.RECONCILE_DURATION.name}_count"):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError, StopIteration):  # (gone meanwhile)
            out[name] = process_usage(pid)[0]
    return out


def run(mode: str, jobs: int, workers: int, workdir: Path, timeout: float, profile: bool = False,
        keep: bool = False, controller_qps: int | None = None, control_plane_profile: bool = False,
        scheduler_qps: int | None = None) -> dict[str, float]:
    names = [f"burst-{i:04d}" for i in range(jobs)]
    out: dict[str, float] = {}
    with control_plane(workdir / mode, jobs, workers, controller_qps, control_plane_profile, scheduler_qps) as cp:
        cp.kubectl("create", "namespace", NAMESPACE)
        wait_until(lambda: cp.kubectl("get", "serviceaccount", "default", "-n", NAMESPACE, check=False).returncode == 0, 60)
        api = api_client(cp.kubeconfig)
        jobs_path = f"/apis/{c.API_VERSION}/namespaces/{NAMESPACE}/{c.PLURAL}"
        pod_watch = Watcher(api, PODS_PATH, pod_ready).start()
        operator, spy = None, None
        if mode in ("floor-job", "operator"):
            cp.apply(crd_yaml())
            cp.kubectl("wait", "--for=condition=Established", f"crd/{c.PLURAL}.{c.GROUP}", "--timeout=60s")
            cp.kubectl("create", "namespace", OPERATOR_NS)
            wait_for_garbage_collector(cp, api, jobs_path)
        if mode == "operator":
            # As a cluster runs it: the chart's flags, ServiceAccount and RBAC, authenticated by its token.
            operator = ChartOperator(cp, "rljob", {}, workdir).operator
            # The fake pods' IPs (POD_CIDR) lead nowhere on this machine, and no request may leave it for them: the
            # operator reads no head here. What reading 1000 heads costs is benchmarks/progress_reads.py's figure.
            operator.extra_args = (*operator.extra_args, "--progress-interval", "0")
            operator.start()
            assert operator.proc is not None
            cpu_before, _ = process_usage(operator.proc.pid)
            spy = py_spy(operator.proc.pid, workdir / "operator-profile.txt") if profile else None
            job_watch = Watcher(api, jobs_path, job_running).start()
        time.sleep(1.0)
        applied: dict[str, float] = {}
        writes_before, cpu_before_cp = api_writes(api), cpu_seconds(cp.pids())
        profilers = control_plane_profilers(cp, api, workdir, mode) if control_plane_profile else []

        def submit(name: str) -> None:
            applied[name] = time.monotonic()
            if mode == "operator":
                post(api, jobs_path, job_manifest(name, workers))
            elif mode == "floor-job":
                for path, obj in job_objects(post(api, jobs_path, job_manifest(name, workers))):
                    post(api, path, obj)
            else:
                for path, obj in floor_objects(name, workers, statefulset=mode == "floor-statefulset"):
                    post(api, path, obj)

        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(submit, names))
        out["all applied seconds"] = time.monotonic() - t0

        expected_pods = jobs * (workers + 1)
        if mode == "operator":
            finished = wait_until(lambda: len(job_watch.first_done) >= jobs, timeout, 0.2)
            ready_at = job_watch.first_done
            with pod_watch.lock:
                pods_ready = pods_ready_per_job(dict(pod_watch.first_done), applied, workers + 1)
            lags = [ready_at[n] - pods_ready[n] for n in names if n in ready_at and n in pods_ready]
            if lags:
                out["p50 pods-Ready-to-Running seconds"] = statistics.median(lags)
                out["p99 pods-Ready-to-Running seconds"] = percentile(lags, 0.99)
                out["p50 apply-to-pods-Ready seconds"] = statistics.median(pods_ready[n] - applied[n] for n in pods_ready)
            if keep:
                write_job_table(api, jobs_path, workdir / "jobs.csv", t0, applied, pods_ready, ready_at)
        else:
            finished = wait_until(lambda: len(pod_watch.first_done) >= expected_pods, timeout, 0.2)
            ready_at = pods_ready_per_job(pod_watch.first_done, applied, workers + 1) if finished else {}
        if len(pod_watch.first_done) >= expected_pods:
            out["all pods Ready seconds"] = max(pod_watch.first_done.values()) - t0
        if not finished:
            print(f"# {mode}: only {len(ready_at)} of {jobs} jobs Running after {timeout:.0f}s", file=sys.stderr)
        out["all Running seconds"] = (max(ready_at.values()) - t0) if finished else float("nan")
        for profiler in profilers:
            profiler.stop()
        latencies = [ready_at[n] - applied[n] for n in names if n in ready_at]
        out["p50 apply-to-Running seconds"] = statistics.median(latencies) if latencies else float("nan")
        out["p99 apply-to-Running seconds"] = percentile(latencies, 0.99) if latencies else float("nan")
        writes = api_writes(api)
        out.update(writes_per_job("writes", writes_before, writes, jobs))
        for name, cpu in cpu_seconds(cp.pids()).items():
            if name in cpu_before_cp:
                out[f"cpu {name}"] = cpu - cpu_before_cp[name]
        if operator is not None and operator.proc is not None:
            out["operator reconciles"] = reconciles(operator.metrics_url)
            cpu, rss = process_usage(operator.proc.pid)
            out["operator CPU seconds"] = cpu - cpu_before
            out["operator peak RSS MB"] = rss

        if spy is not None:  # the delete in a profile of its own
            stop_py_spy(spy)
            spy = py_spy(operator.proc.pid, workdir / "operator-delete-profile.txt")
        cpu_before_delete = cpu_seconds(cp.pids())
        profilers = control_plane_profilers(cp, api, workdir, mode, "delete-") if control_plane_profile else []
        t1 = time.monotonic()
        # Deleted in order within a list, the lists side by side: the StatefulSets before the pods (or their
        # controller replaces the pods), the head Services before them (as the operator does).
        lanes = {"operator": [[jobs_path]], "floor-job": [[jobs_path], [SERVICES_PATH, STS_PATH, PODS_PATH]]}.get(
            mode, [[STS_PATH, PODS_PATH]])
        gone, end = False, time.monotonic() + timeout
        jobs_gone: list[float] = []  # when the API server has deleted the last job (what the operator follows)

        def no_pods() -> bool:
            if mode == "operator" and not jobs_gone and not job_watch.live:
                jobs_gone.append(time.monotonic() - t1)
            return not pod_watch.live

        def delete_in_order(paths: list[str]) -> None:
            for delete_path in paths:
                api.call_api(*api.param_serialize("DELETE", delete_path, body={"propagationPolicy": "Background"},
                                                  header_params={"Content-Type": "application/json"}, auth_settings=["BearerToken"]))
        while not gone and time.monotonic() < end:
            # A deletecollection of thousands of objects can end before all are deleted (the API server's
            # request timeout): ask again, as `kubectl delete --all` would be run again.
            with ThreadPoolExecutor(len(lanes)) as pool:
                list(pool.map(delete_in_order, lanes))
            gone = wait_until(no_pods, min(30.0, end - time.monotonic()), 0.2)
        out["delete-to-no-pods seconds"] = time.monotonic() - t1 if gone else float("nan")
        for name, cpu in cpu_seconds(cp.pids()).items():
            if name in cpu_before_delete:
                out[f"delete cpu {name}"] = cpu - cpu_before_delete[name]
        for profiler in profilers:
            profiler.stop()
        if jobs_gone:
            out["jobs deleted seconds"] = jobs_gone[0]
        out["pods left"] = float(len(pod_watch.live))
        if gone:
            out.update(writes_per_job("delete writes", writes, api_writes(api), jobs))
        if operator is not None and operator.proc is not None:
            out["operator CPU seconds incl. delete"] = process_usage(operator.proc.pid)[0] - cpu_before
            if spy is not None:
                stop_py_spy(spy)
            operator.stop()
            job_watch.stop()  # before the control plane goes, or it reports every failed reconnect
        pod_watch.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for Running, and for deletion")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--profile", action="store_true", help="record the operator with py-spy (installed separately)"
                        " into the --keep folder, from the first apply to all Running as operator-profile.txt and from the delete"
                        " until no pod is left as operator-delete-profile.txt")
    parser.add_argument("--control-plane-profile", "--apiserver-profile", dest="control_plane_profile",
                        action="store_true",
                        help="record kube-apiserver's and kube-controller-manager's CPU (Go pprof) from the first apply to"
                        " all Running, in every mode, into the --keep folder, as MODE-kube-apiserver-cpu/*.pprof and"
                        " MODE-kube-controller-manager-cpu/*.pprof (read with `go tool pprof -top -cum FOLDER/*`), and"
                        " from the delete until no pod is left, as MODE-delete-kube-apiserver-cpu/*.pprof and so on")
    parser.add_argument("--keep", type=Path, help="keep control-plane logs and the operator log here (else they go in a"
                        " temporary folder, removed at the end)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="run the modes N times, each round in a rotated order (no mode always first or last); print"
                        " each figure as the median over the rounds and each ratio as the median of the rounds' own ratios,"
                        " with every round's ratio beside it")
    parser.add_argument("--controller-manager-qps", type=int, default=None, metavar="QPS",
                        help="the controller manager's --kube-api-qps (burst twice that) in every mode; default its own 20")
    parser.add_argument("--scheduler-qps", type=int, default=None, metavar="QPS",
                        help="the scheduler's --kube-api-qps (burst twice that) in every mode; default its own 50, which"
                        " bounds every mode: one binding per pod")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if (args.profile or args.control_plane_profile) and args.keep is None:
        parser.error("--profile and --control-plane-profile write into the --keep folder: give one")
    with contextlib.ExitStack() as stack:
        if args.keep is None:  # each mode's etcd data and logs: hundreds of MB at 1000 jobs
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rljob-burst-")))
        else:
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=True)
        return report(args, workdir)


def round_folder(workdir: Path, rounds: int, r: int) -> Path:
    return workdir if rounds == 1 else workdir / f"round-{r + 1}"


def run_round(args: argparse.Namespace, workdir: Path, r: int) -> dict[str, dict[str, float]]:
    """Every mode once, in the order of `--modes` rotated by the round, so that whatever favours a place in the order
    (the first on a quiet machine, the last after two control planes came and went) is shared by every mode."""
    folder = round_folder(workdir, args.rounds, r)
    shift = r % len(args.modes)
    out: dict[str, dict[str, float]] = {}
    for mode in [*args.modes[shift:], *args.modes[:shift]]:
        if args.rounds > 1:
            print(f"# round {r + 1} of {args.rounds}: {mode}", file=sys.stderr, flush=True)
        out[mode] = run(mode, args.jobs, args.workers, folder, args.timeout, args.profile, args.keep is not None,
                        args.controller_manager_qps, args.control_plane_profile, args.scheduler_qps)
        if args.keep is None:  # its etcd data (hundreds of MB at 1000 jobs) is no use once measured
            shutil.rmtree(folder / mode, ignore_errors=True)
    return {mode: out[mode] for mode in args.modes}


def median(values: list[float]) -> float:
    """NaN when any round has none (it timed out): a median would hide that round."""
    return float("nan") if any(math.isnan(v) for v in values) else statistics.median(values)


def combined(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each mode's figures over the rounds: the median, but the worst round for pods left and peak RSS (targets
    every round must meet). A figure some round lacks is left out."""
    out: dict[str, dict[str, float]] = {}
    for mode in rounds[0]:
        keys = set.intersection(*(set(r[mode]) for r in rounds))
        out[mode] = {k: (max if k in ("pods left", "operator peak RSS MB") else median)([r[mode][k] for r in rounds])
                     for k in rounds[0][mode] if k in keys}
    return out


def report(args: argparse.Namespace, workdir: Path) -> int:
    what = f"{args.jobs} jobs x (1 GPU head + {args.workers} workers)"
    rounds = [run_round(args, workdir, r) for r in range(args.rounds)]
    results = combined(rounds)
    qps = args.controller_manager_qps
    print(f"hardware: {cpu_model()}, {os.cpu_count()} cores; burst: {what}; one fresh control plane per mode; "
          f"controller manager at {qps if qps is not None else 'its default 20'} requests/s, scheduler at "
          f"{args.scheduler_qps if args.scheduler_qps is not None else 'its default 50'} requests/s"
          + (f"; {args.rounds} rounds, each figure their median, each ratio the median of theirs [every round's]"
             if args.rounds > 1 else ""))
    for mode, figures in results.items():
        print(f"{LABELS[mode]} all applied seconds: {figures['all applied seconds']:.1f} (the last create or apply"
              " answered)")
    for key in ("all Running seconds", "p50 apply-to-Running seconds", "p99 apply-to-Running seconds",
                "delete-to-no-pods seconds"):
        for mode, figures in results.items():
            ratios = []
            # Against each floor before this mode in MODES: the operator against all three.
            for base in MODES[:MODES.index(mode)]:
                if base not in results:
                    continue
                each = [r[mode][key] / r[base][key] for r in rounds]
                ratios.append(f"{median(each):.2f}x the {LABELS[base]}"
                              + (" [" + " ".join(f"{x:.2f}x" for x in each) + "]" if len(each) > 1 else ""))
            print(f"{LABELS[mode]} {key}: {figures[key]:.1f}" + (" = " + ", ".join(ratios) if ratios else ""))
    for mode, figures in results.items():
        for prefix, when in (("writes", "to all Running"), ("delete writes", "from delete to no pods")):
            writes = {k[len(prefix) + 1:]: v for k, v in figures.items() if k.startswith(prefix + " ")}
            if writes:
                print(f"{LABELS[mode]} API writes per job {when}: {sum(writes.values()):.1f} ("
                      + ", ".join(f"{k} {v:.1f}" for k, v in sorted(writes.items(), key=lambda kv: -kv[1])) + ")")
        for prefix, when in (("cpu", "to all Running"), ("delete cpu", "from delete to no pods")):
            cpus = {k[len(prefix) + 1:]: v for k, v in figures.items() if k.startswith(prefix + " ")}
            if cpus:
                print(f"{LABELS[mode]} control-plane CPU seconds {when}: {sum(cpus.values()):.1f} ("
                      + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpus.items(), key=lambda kv: -kv[1])) + ")")
    if args.control_plane_profile:
        for window, when in (("", "first apply to all Running"), ("delete-", "delete to no pods")):
            print(f"CPU profiles, {when}: " + ", ".join(
                str(round_folder(workdir, args.rounds, r) / f"{mode}-{window}{name}-cpu") for r in range(args.rounds)
                for mode in results for name in ("kube-apiserver", "kube-controller-manager")))
    op = results.get("operator")
    if op is None:
        return 0
    if "all pods Ready seconds" in op:
        print(f"operator all pods Ready seconds: {op['all pods Ready seconds']:.1f} (the rest of all Running is the"
              " operator noticing; worker pods come from the StatefulSet controller)")
    if "p50 pods-Ready-to-Running seconds" in op:
        print(f"operator p50 apply-to-pods-Ready seconds: {op['p50 apply-to-pods-Ready seconds']:.1f} (a job's last pod)")
        print(f"operator p50 / p99 pods-Ready-to-Running seconds: {op['p50 pods-Ready-to-Running seconds']:.1f} / "
              f"{op['p99 pods-Ready-to-Running seconds']:.1f} (from a job's last pod Ready to the job Running)")
    if "jobs deleted seconds" in op:
        print(f"operator jobs deleted seconds: {op['jobs deleted seconds']:.1f} (the API server deleting the jobs"
              " themselves, one after another; each job's pods go after it)")
    print(f"operator reconciles per job to all Running: {op['operator reconciles'] / args.jobs:.1f}")
    print(f"operator peak RSS: {op['operator peak RSS MB']:.0f} MB")
    print(f"operator CPU seconds to all Running: {op['operator CPU seconds']:.1f} "
          f"({1000 * op['operator CPU seconds'] / args.jobs:.0f} ms per job)")
    print(f"operator CPU seconds incl. delete: {op['operator CPU seconds incl. delete']:.1f}")
    print("pods left after delete: " + ", ".join(f"{LABELS[m]} {r['pods left']:.0f}" for m, r in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
