"""A real, local Kubernetes control plane for the integration tests (like envtest or ``kwokctl --runtime=binary``).

It runs, as plain processes on 127.0.0.1 (free ports, nothing listens on another address):

* etcd (data in the work dir, no fsync),
* kube-apiserver with TLS, client-certificate authentication, ``Node,RBAC`` authorization, the default admission
  plugins (``PodSecurity`` included) plus ``NodeRestriction`` and ``OwnerReferencesPermissionEnforcement``, and
  service-account token signing,
* kube-controller-manager with every default controller (garbage collector, namespace, service-account and
  token, root-CA publisher, StatefulSet, Job, ...),
* kube-scheduler,
* kwok, which plays the kubelets of the fake nodes the harness creates (``cpu_nodes`` CPU nodes and
  ``gpu_nodes`` nodes with ``nvidia.com/gpu``): scheduled pods become Running and Ready, and
  :meth:`ControlPlane.set_pod_phase` ends them with a given exit code (see ``kwok/*.yaml`` beside this file).

Binaries come from ``hack/cluster-bins.sh`` (``make cluster-bins``); see :func:`find_bin_dir`.

Usage::

    with ControlPlane(tmp_path) as cp:
        cp.kubectl("get", "nodes")
        cp.apply({...})

or, from a shell in the repository's root, ``python -m tests.cluster.controlplane`` (a dev cluster in the
foreground; ``python -m tests.cluster`` adds the operator).

Every process is started in its own session (:mod:`tests.cluster.processes`) and stopped by
:meth:`ControlPlane.stop` (SIGTERM, then SIGKILL), which also runs at interpreter exit and on SIGTERM/SIGHUP; on
Linux the processes also get SIGKILL if the thread that started them dies (``PR_SET_PDEATHSIG``), so even a
killed test run leaves nothing behind. The certificates come from :mod:`tests.cluster.pki`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ControlPlaneError, KubectlError, MissingBinariesError
from .pki import PKI, write_kubeconfig
from .processes import (
    LOCALHOST,
    Component,
    forget_on_exit,
    free_port,
    install_signal_handlers,
    spawn,
    stop_on_exit,
    tail,
    terminate,
    wait_for,
)

__all__ = [
    "BINARIES",
    "DEFAULT_AUDIT_POLICY",
    "GPU_RESOURCE",
    "K8S_VERSION",
    "KWOK_NODE_ANNOTATION",
    "LOCALHOST",
    "SERVICE_CLUSTER_IP_RANGE",
    "STAGES_DIR",
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
    "MissingBinariesError",
    "default_bin_dir",
    "find_bin_dir",
    "format_timings",
    "main",
    "start_control_plane",
    "wait_for",
]

#: Version of the Kubernetes binaries; keep in sync with hack/cluster-bins.sh and hack/k8s/go.mod.
K8S_VERSION = "v1.36.3"
#: Binaries the harness runs (helm is built by hack/cluster-bins.sh too, but the control plane does not need it).
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")

#: kwok manages only the nodes with this annotation set to "fake".
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"

# Annotations read by the rljob-pod-finish kwok stage (kwok/pod-stages.yaml).
PHASE_ANNOTATION = "testing.rljob.io/phase"
EXIT_CODE_ANNOTATION = "testing.rljob.io/exit-code"
REASON_ANNOTATION = "testing.rljob.io/reason"
MESSAGE_ANNOTATION = "testing.rljob.io/message"

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: Pod IPs handed out by kwok. Loopback on purpose: nothing that tries to reach a pod leaves this machine. The
#: price: EndpointSlices/Endpoints reject loopback addresses, so Services get no endpoints.
DEFAULT_POD_CIDR = "127.244.0.0/16"

#: The audit policy used with ``ControlPlane(audit_log=True)`` when none is given: every request, metadata only
#: (who, verb, resource, subresource, namespace, name, response code), from the moment the response starts (so
#: long-running watches are seen when they open, not only when they end).
DEFAULT_AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}

#: kwok's stages for the fake nodes and their pods.
STAGES_DIR = Path(__file__).resolve().parent / "kwok"
STAGE_FILES = ("node-stages.yaml", "pod-stages.yaml")


# --------------------------------------------------------------------------------------------------------------
# Binaries


def default_bin_dir() -> Path:
    """Where hack/cluster-bins.sh puts the binaries: ``${RLJOB_CACHE:-~/.cache/rljob}/k8s/<version>/bin``."""
    cache = os.environ.get("RLJOB_CACHE") or str(Path.home() / ".cache" / "rljob")
    return Path(cache) / "k8s" / K8S_VERSION / "bin"


def find_bin_dir(bin_dir: str | os.PathLike[str] | None = None, required: Sequence[str] = BINARIES) -> Path:
    """Return the directory holding the control-plane binaries.

    Looks at ``bin_dir`` if given, else ``$RLJOB_K8S_BIN``, else :func:`default_bin_dir`. Raises
    :class:`MissingBinariesError` (telling to run ``make cluster-bins``) if any of ``required`` is missing.
    """
    if bin_dir is not None:
        where, source = Path(bin_dir), "the bin_dir argument"
    elif os.environ.get("RLJOB_K8S_BIN"):
        where, source = Path(os.environ["RLJOB_K8S_BIN"]), "$RLJOB_K8S_BIN"
    else:
        where, source = default_bin_dir(), "the default cache of hack/cluster-bins.sh"
    where = where.expanduser()
    missing = [b for b in required if not os.access(where / b, os.X_OK)]
    if missing:
        raise MissingBinariesError(
            f"Kubernetes binaries missing from {where} ({source}): {', '.join(missing)}.\n"
            f"Build them with `make cluster-bins` (runs hack/cluster-bins.sh, ~10 min the first time; it prints "
            f"the bin dir on its last line), or point $RLJOB_K8S_BIN at a directory holding {', '.join(required)} "
            f"for Kubernetes {K8S_VERSION}."
        )
    return where.resolve()


# --------------------------------------------------------------------------------------------------------------
# Manifests


def dump_manifest(obj: Any) -> str:
    """kubectl's stdin: YAML text as is, objects dumped (a list as a multi-document stream)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, (list, tuple)):
        return yaml.safe_dump_all(list(obj), sort_keys=False)
    return yaml.safe_dump(obj, sort_keys=False)


# --------------------------------------------------------------------------------------------------------------
# The control plane


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok with fake nodes, on 127.0.0.1.

    ``workdir`` holds everything (certificates, kubeconfigs, etcd data, ``logs/<component>.log``); it is created
    if needed and should be empty. An instance starts once: after :meth:`stop`, make a new one. After
    :meth:`start`, :attr:`kubeconfig` is an admin (``system:masters``) kubeconfig and :attr:`server` the API
    server URL.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        bin_dir: str | os.PathLike[str] | None = None,
        cpu_nodes: int = 3,
        gpu_nodes: int = 1,
        *,
        node_cpu: str = "16",
        node_memory: str = "64Gi",
        node_pods: int = 110,
        gpus_per_node: int = 8,
        pod_cidr: str = DEFAULT_POD_CIDR,
        start_timeout: float = 120.0,
        die_with_parent: bool = True,
        apiserver_address: str = LOCALHOST,
        audit_log: bool = False,
        audit_policy: Mapping[str, Any] | None = None,
        controller_manager_args: Sequence[str] = (),
        scheduler_args: Sequence[str] = (),
        profiling: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self._bin_dir_arg = bin_dir
        self.bin_dir: Path | None = None
        self.cpu_nodes = cpu_nodes
        self.gpu_nodes = gpu_nodes
        self.node_cpu = node_cpu
        self.node_memory = node_memory
        self.node_pods = node_pods
        self.gpus_per_node = gpus_per_node
        self.pod_cidr = pod_cidr
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        #: Where kube-apiserver listens, advertises itself and is reached. The default, 127.0.0.1, keeps everything
        #: on loopback (the kubernetes Service then has no endpoints). Another address (the e2e tests use one inside a
        #: network namespace they create, shared with a real kubelet and its pods) makes the ``kubernetes`` Service
        #: point at it, so pods reach the API server; the other components stay on 127.0.0.1.
        self.apiserver_address = apiserver_address
        #: with ``audit_log``, kube-apiserver writes an audit log (JSON lines) to :attr:`audit_log_path`, following
        #: ``audit_policy`` (default :data:`DEFAULT_AUDIT_POLICY`); read it with :meth:`audit_events`.
        self.audit_log = audit_log or audit_policy is not None
        self.audit_policy = dict(audit_policy) if audit_policy is not None else DEFAULT_AUDIT_POLICY
        #: more kube-controller-manager flags, after the defaults (a later flag wins), e.g. a higher
        #: ``--kube-api-qps`` as large clusters run it
        self.controller_manager_args = tuple(controller_manager_args)
        #: more kube-scheduler flags, after the defaults, e.g. its ``--kube-api-qps`` (50 by default: the scheduler
        #: binds at most that many pods per second, after a burst of 100)
        self.scheduler_args = tuple(scheduler_args)
        #: kube-apiserver and kube-controller-manager serve Go's profiles under /debug/pprof (to an authorized client):
        #: what a benchmark reads to see where their time goes (:meth:`component_get`). Off by default, as hardened
        #: clusters run them.
        self.profiling = profiling

        self.logs_dir = self.workdir / "logs"
        self.pki_dir = self.workdir / "pki"
        self.kubeconfig = self.workdir / "kubeconfig"  # admin
        self.audit_log_path = self.logs_dir / "audit.log"
        self.server = ""
        self.ports: dict[str, int] = {}
        #: seconds spent in each start-up phase, and in all (``total``)
        self.timings: dict[str, float] = {}
        self._components: list[Component] = []
        self._lock = threading.RLock()
        self._started = False
        self._used = False
        self._ssl: ssl.SSLContext | None = None

    # ---- public API ------------------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def node_names(self) -> list[str]:
        return [f"kwok-cpu-{i}" for i in range(self.cpu_nodes)] + [f"kwok-gpu-{i}" for i in range(self.gpu_nodes)]

    @property
    def startup_seconds(self) -> float | None:
        return self.timings.get("total")

    def bin(self, name: str) -> str:
        """Path of one of the binaries (``kubectl``, ``helm``, ...); :class:`MissingBinariesError` if absent."""
        bin_dir = self.bin_dir or find_bin_dir(self._bin_dir_arg, required=())
        if not os.access(bin_dir / name, os.X_OK):
            find_bin_dir(bin_dir, required=(name,))  # raises with the how-to-build message
        return str(bin_dir / name)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses that talk to this cluster: ``KUBECONFIG`` set, bin dir first on
        ``PATH``."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        if self.bin_dir:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self) -> ControlPlane:
        """Start every component, create the fake nodes and wait until the cluster is usable. Raises
        :class:`ControlPlaneError` (with the tail of the failing component's log) and cleans up on failure."""
        with self._lock:
            if self._started:
                return self
            if self._used:
                raise ControlPlaneError("a ControlPlane starts only once; make a new one (in a fresh workdir)")
            self._started = self._used = True
        t0 = time.monotonic()
        stop_on_exit(self)
        install_signal_handlers()
        try:
            self.bin_dir = find_bin_dir(self._bin_dir_arg)
            self._phase("certificates", self._prepare)
            self._phase("etcd", self._start_etcd)
            self._phase("kube-apiserver", self._start_apiserver)
            self._phase("controllers", self._start_controllers)
            self._phase("nodes", self._create_nodes)
            self._phase("service-accounts", self._wait_default_service_account)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every process (SIGTERM to its process group, SIGKILL after a grace period). Idempotent."""
        with self._lock:
            components, self._components = self._components, []
            self._started = False
        by_name = {c.name: c for c in components}
        # Clients first, then the API server, then its storage.
        order = [["kwok", "kube-scheduler", "kube-controller-manager"], ["kube-apiserver"], ["etcd"]]
        known = {n for group in order for n in group}
        order.append([c.name for c in components if c.name not in known])
        for group in order:
            terminate([by_name[n] for n in group if n in by_name], grace=5.0)
        for c in components:
            with contextlib.suppress(OSError):
                c.log_file.close()
        forget_on_exit(self)

    def pids(self) -> dict[str, int]:
        """Process ids of the running components."""
        return {c.name: c.proc.pid for c in self._components if c.exited() is None}

    def check_alive(self) -> None:
        """Raise :class:`ControlPlaneError` if a component has exited."""
        for c in list(self._components):
            if c.exited() is not None:
                raise self._component_error(c, "exited")

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def kubectl(
        self,
        *args: str | os.PathLike[str],
        input: str | Mapping[str, Any] | Sequence[Any] | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as cluster admin. ``input`` may be text or objects (dumped as YAML). Raises
        :class:`KubectlError` (stderr included) if ``check`` and it fails."""
        cmd = [
            self.bin("kubectl"),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *map(str, args),
        ]
        text = None if input is None else dump_manifest(input)
        res = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def get_json(self, *args: str) -> Any:
        """``kubectl get ARGS -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: str | Mapping[str, Any] | Sequence[Any], namespace: str | None = None) -> str:
        """Server-side ``kubectl apply`` of YAML text or objects; returns kubectl's output."""
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", "--server-side", "--field-manager=rljob-tests", *ns, "-f", "-", input=manifest).stdout

    def create(self, manifest: str | Mapping[str, Any] | Sequence[Any], namespace: str | None = None) -> str:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("create", *ns, "-f", "-", input=manifest).stdout

    def audit_events(self, user: str | None = None) -> list[dict[str, Any]]:
        """The audit log's events so far (``audit.k8s.io/v1`` Event objects, oldest first), only those of ``user``
        (e.g. ``system:serviceaccount:NS:NAME``) if given. Needs ``audit_log=True``."""
        if not self.audit_log:
            raise ControlPlaneError("this control plane keeps no audit log: start it with ControlPlane(..., audit_log=True)")
        events = []
        try:
            with open(self.audit_log_path, encoding="utf-8") as f:
                for line in f:
                    try:
                        event = json.loads(line)
                    except ValueError:  # the line being written right now
                        continue
                    if user is None or (event.get("user") or {}).get("username") == user:
                        events.append(event)
        except FileNotFoundError:
            pass
        return events

    def component_get(self, component: str, path: str, timeout: float = 60.0) -> bytes:
        """GET ``path`` from a component's own secure port (``controller-manager`` or ``scheduler``) as admin: its
        client certificate is checked against the cluster CA and the component asks the API server whether admin
        may (it may)."""
        url = f"https://{LOCALHOST}:{self.ports[component]}{path}"
        with urllib.request.urlopen(url, context=self._ssl, timeout=timeout) as resp:
            return resp.read()

    def wait_established(self, *names: str, timeout: float = 60.0) -> None:
        """Until each named CustomResourceDefinition (every one there, with no names) serves its API: condition
        Established. Not `kubectl wait --for=condition=Established`: kubectl 1.36 fails at once on a CRD whose status
        has no conditions yet (".status.conditions accessor error: <nil>"), which a busy API server shows for a
        moment after the create."""

        def pending() -> list[str]:
            listed = self.get_json("customresourcedefinitions")["items"]
            by_name = {crd["metadata"]["name"]: crd for crd in listed}
            return [
                name
                for name in (names or list(by_name))
                if not any(
                    cond.get("type") == "Established" and cond.get("status") == "True"
                    for cond in (by_name.get(name, {}).get("status") or {}).get("conditions") or []
                )
            ]

        wait_for(lambda: not pending(), timeout, description=f"CRDs {', '.join(names) or '(all)'} to be Established",
                 ignore=(KubectlError,))  # fmt: skip

    def raw(self, path: str) -> Any:
        """GET an API path (e.g. ``/version``) as admin; parsed JSON."""
        return json.loads(self.kubectl("get", "--raw", path).stdout)

    def set_pod_phase(
        self,
        namespace: str,
        name: str,
        phase: str,
        exit_code: int | None = None,
        reason: str | None = None,
        message: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """End a pod as if its containers had exited: ``phase`` is ``Succeeded`` or ``Failed``; every container
        is ``terminated`` with ``exit_code`` (default 0 / 1) and ``reason`` (default ``Completed`` / ``Error``).
        Waits until the pod has that phase and returns it. Nothing moves it back (no kwok stage matches a terminal
        pod).

        A pod bound to a node is ended by kwok (the ``rljob-pod-finish`` stage, triggered by annotations; a pod
        that is still Pending first becomes Running), like a kubelet would; a pod that was never scheduled gets
        its status patched directly.
        """
        if phase not in ("Succeeded", "Failed"):
            raise ValueError(f"phase must be 'Succeeded' or 'Failed', not {phase!r}")
        if exit_code is None:
            exit_code = 0 if phase == "Succeeded" else 1
        exit_code = int(exit_code)
        pod = self.get_json("pod", name, "-n", namespace)
        current = pod.get("status", {}).get("phase")
        if current == phase:
            return pod
        if current in ("Succeeded", "Failed"):
            raise ControlPlaneError(f"pod {namespace}/{name} already ended ({current}); cannot make it {phase}")
        if pod.get("spec", {}).get("nodeName"):
            annotations = {
                PHASE_ANNOTATION: phase,
                EXIT_CODE_ANNOTATION: str(exit_code),
                REASON_ANNOTATION: reason or "",
                MESSAGE_ANNOTATION: message or "",
            }
            patch = {"metadata": {"annotations": {k: (v or None) for k, v in annotations.items()}}}
            self.kubectl("patch", "pod", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
        else:
            status: dict[str, Any] = {"phase": phase}
            if reason:
                status["reason"] = reason
            if message:
                status["message"] = message
            self.kubectl(
                "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": status}),
            )  # fmt: skip

        return self.wait_for_pod_phase(namespace, name, phase, timeout)

    def wait_for_pod_phase(self, namespace: str, name: str, phase: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the pod's ``status.phase`` is ``phase``; returns the pod."""

        def check() -> dict[str, Any] | None:
            p = self.get_json("pod", name, "-n", namespace)
            return p if p.get("status", {}).get("phase") == phase else None

        return wait_for(check, timeout, description=f"pod {namespace}/{name} to be {phase}", ignore=(KubectlError,))

    # ---- start-up --------------------------------------------------------------------------------------------

    def _phase(self, name: str, fn: Callable[[], None]) -> None:
        t = time.monotonic()
        fn()
        self.timings[name] = time.monotonic() - t

    def _prepare(self) -> None:
        for d in (self.workdir, self.logs_dir, self.pki_dir):
            d.mkdir(parents=True, exist_ok=True)
        for name in ("etcd", "apiserver", "controller-manager", "scheduler", "kwok", "kwok-server"):
            self.ports[name] = free_port()
        self.server = f"https://{self.apiserver_address}:{self.ports['apiserver']}"

        pki = PKI(self.pki_dir)
        pki.make_ca()
        self.ca_crt = pki.ca_crt
        self.ca_key = pki.ca_key
        # One serving certificate for every component listening on 127.0.0.1 (API server, controller manager,
        # scheduler, kwok's "kubelet" server). The in-cluster names and the first service IP are just names in
        # the certificate.
        self.serving_crt, self.serving_key = pki.make_cert(
            "serving",
            "kube-apiserver",
            server=True,
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips=sorted({LOCALHOST, self.apiserver_address, "10.96.0.1"}),
        )
        # The aggregation layer's front proxy (request-header authentication), with a CA of its own as kubeadm
        # does; without it every component logs errors about the missing requestheader CA.
        front = PKI(self.pki_dir / "front-proxy")
        front.make_ca("rljob-test-front-proxy-ca")
        self.front_proxy_ca = front.ca_crt
        self.front_proxy_crt, self.front_proxy_key = front.make_cert("front-proxy-client", "front-proxy-client", client=True)
        self.sa_key = pki.key("service-account")
        self.sa_pub = pki.public_key(self.sa_key, "service-account")
        self.kubelet_client_crt, self.kubelet_client_key = pki.make_cert(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["kubeadm:cluster-admins"], client=True
        )
        admin = pki.make_cert("admin", "kubernetes-admin", ["system:masters"], client=True)
        kcm = pki.make_cert("controller-manager", "system:kube-controller-manager", client=True)
        sched = pki.make_cert("scheduler", "system:kube-scheduler", client=True)
        kwok = pki.make_cert("kwok", "kwok-controller", ["system:masters"], client=True)

        kc = self.workdir / "kubeconfigs"
        write_kubeconfig(self.kubeconfig, self.server, self.ca_crt, *admin, "kubernetes-admin")
        self.kcm_kubeconfig = write_kubeconfig(
            kc / "controller-manager.conf", self.server, self.ca_crt, *kcm, "system:kube-controller-manager"
        )
        self.scheduler_kubeconfig = write_kubeconfig(kc / "scheduler.conf", self.server, self.ca_crt, *sched, "system:kube-scheduler")
        self.kwok_kubeconfig = write_kubeconfig(kc / "kwok.conf", self.server, self.ca_crt, *kwok, "kwok")

        ctx = ssl.create_default_context(cafile=str(self.ca_crt))
        ctx.load_cert_chain(str(admin[0]), str(admin[1]))
        self._ssl = ctx

    def _spawn(self, name: str, args: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None) -> Component:
        component = spawn(name, args, self.log_path(name), cwd=self.workdir, env=env, with_parent=self.die_with_parent)
        with self._lock:
            self._components.append(component)
        return component

    def _component_error(self, c: Component, what: str) -> ControlPlaneError:
        rc = c.exited()
        state = f"exited with code {rc}" if rc is not None else "still running"
        return ControlPlaneError(f"{c.name} {what} ({state}); last lines of {c.log_path}:\n{tail(c.log_path)}")

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=self._ssl if url.startswith("https") else None) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _wait_healthy(self, components: Iterable[tuple[Component, str]], timeout: float | None = None) -> None:
        pending = dict((c.name, (c, url)) for c, url in components)
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while pending:
            for name, (c, url) in list(pending.items()):
                if c.exited() is not None:
                    raise self._component_error(c, "failed to start")
                if self._http_ok(url):
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                c, url = next(iter(pending.values()))
                raise self._component_error(c, f"was not healthy at {url} after {timeout or self.start_timeout:g}s")
            time.sleep(0.1)

    def _start_etcd(self) -> None:
        port = self.ports["etcd"]
        peer = free_port()
        url = f"http://{LOCALHOST}:{port}"
        c = self._spawn(
            "etcd",
            [
                self.bin("etcd"),
                "--name=rljob-test",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://{LOCALHOST}:{peer}",
                f"--initial-advertise-peer-urls=http://{LOCALHOST}:{peer}",
                f"--initial-cluster=rljob-test=http://{LOCALHOST}:{peer}",
                "--initial-cluster-state=new",
                # Throw-away data: skip fsync (a big win on slow disks) and keep the database small.
                "--unsafe-no-fsync=true",
                "--snapshot-count=10000",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        self._wait_healthy([(c, f"{url}/health")])

    def _start_apiserver(self) -> None:
        port = self.ports["apiserver"]
        c = self._spawn(
            "kube-apiserver",
            [
                self.bin("kube-apiserver"),
                f"--etcd-servers=http://{LOCALHOST}:{self.ports['etcd']}",
                f"--bind-address={self.apiserver_address}",
                f"--advertise-address={self.apiserver_address}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={self.serving_crt}",
                f"--tls-private-key-file={self.serving_key}",
                f"--client-ca-file={self.ca_crt}",
                "--authorization-mode=Node,RBAC",
                # The default plugins (NamespaceLifecycle, LimitRanger, ServiceAccount, PodSecurity, Priority,
                # ResourceQuota, the admission webhooks and policies, ...) plus NodeRestriction, as kubeadm does,
                # and OwnerReferencesPermissionEnforcement, as strict clusters (OpenShift) do: an ownerReference
                # with blockOwnerDeletion needs update on the owner's finalizers.
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                "--allow-privileged=true",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self.sa_pub}",
                f"--service-account-signing-key-file={self.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # The "kubernetes" Service would get 127.0.0.1 as endpoint, which Endpoints validation rejects.
                f"--endpoint-reconciler-type={'none' if self.apiserver_address == LOCALHOST else 'lease'}",
                # Nodes report InternalIP 127.0.0.1 and kwok's server as kubelet port: logs/exec stay local.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={self.kubelet_client_crt}",
                f"--kubelet-client-key={self.kubelet_client_key}",
                f"--requestheader-client-ca-file={self.front_proxy_ca}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={self.front_proxy_crt}",
                f"--proxy-client-key-file={self.front_proxy_key}",
                f"--profiling={str(self.profiling).lower()}",
                *self._audit_args(),
            ],
        )
        self._wait_healthy([(c, f"{self.server}/readyz")])

    def _audit_args(self) -> list[str]:
        if not self.audit_log:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(dict(self.audit_policy), sort_keys=False))
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log_path}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # written before the response: what a client saw is already in the file
            "--audit-log-maxsize=0",  # never rotated
        ]

    def _start_controllers(self) -> None:
        kcm_port = self.ports["controller-manager"]
        sched_port = self.ports["scheduler"]
        kwok_port = self.ports["kwok-server"]
        kcm = self._spawn(
            "kube-controller-manager",
            [
                self.bin("kube-controller-manager"),
                f"--kubeconfig={self.kcm_kubeconfig}",
                f"--authentication-kubeconfig={self.kcm_kubeconfig}",
                f"--authorization-kubeconfig={self.kcm_kubeconfig}",
                f"--bind-address={LOCALHOST}",
                f"--secure-port={kcm_port}",
                f"--tls-cert-file={self.serving_crt}",
                f"--tls-private-key-file={self.serving_key}",
                f"--client-ca-file={self.ca_crt}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_key}",
                f"--root-ca-file={self.ca_crt}",
                f"--cluster-signing-cert-file={self.ca_crt}",
                f"--cluster-signing-key-file={self.ca_key}",
                "--cluster-name=rljob-test",
                # kwok's heartbeats lag on a loaded machine; with the default 40s the node-lifecycle controller
                # would mark the nodes NotReady and their pods not ready (for good, as kwok never re-readies pods).
                "--node-monitor-grace-period=1h",
                f"--profiling={str(self.profiling).lower()}",
                *self.controller_manager_args,
            ],
        )
        sched = self._spawn(
            "kube-scheduler",
            [
                self.bin("kube-scheduler"),
                f"--kubeconfig={self.scheduler_kubeconfig}",
                f"--authentication-kubeconfig={self.scheduler_kubeconfig}",
                f"--authorization-kubeconfig={self.scheduler_kubeconfig}",
                f"--bind-address={LOCALHOST}",
                f"--secure-port={sched_port}",
                f"--tls-cert-file={self.serving_crt}",
                f"--tls-private-key-file={self.serving_key}",
                "--leader-elect=false",
                *self.scheduler_args,
            ],
        )
        # kwok reads ~/.kwok/kwok.yaml if it exists: give it a HOME of its own so only our stages apply.
        kwok_home = self.workdir / "kwok-home"
        kwok_home.mkdir(exist_ok=True)
        kwok_args: list[str | os.PathLike[str]] = [
            self.bin("kwok"),
            f"--kubeconfig={self.kwok_kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40",
            f"--cidr={self.pod_cidr}",
            f"--node-ip={LOCALHOST}",
            f"--node-port={kwok_port}",
            f"--server-address={LOCALHOST}:{kwok_port}",
            f"--tls-cert-file={self.serving_crt}",
            f"--tls-private-key-file={self.serving_key}",
        ]
        kwok_args += [f"--config={STAGES_DIR / f}" for f in STAGE_FILES]
        kwok = self._spawn("kwok", kwok_args, env={**os.environ, "HOME": str(kwok_home)})
        self._wait_healthy(
            [
                (kcm, f"https://{LOCALHOST}:{kcm_port}/healthz"),
                (sched, f"https://{LOCALHOST}:{sched_port}/readyz"),
                (kwok, f"https://{LOCALHOST}:{kwok_port}/healthz"),
            ]
        )

    def _node_manifest(self, name: str, gpu: bool) -> dict[str, Any]:
        resources = {
            "cpu": self.node_cpu,
            "memory": self.node_memory,
            "pods": str(self.node_pods),
            "ephemeral-storage": "200Gi",
        }
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "kwok-gpu" if gpu else "kwok-cpu",
            "type": "kwok",
        }
        if gpu:
            resources[GPU_RESOURCE] = str(self.gpus_per_node)
            labels[GPU_PRESENT_LABEL] = "true"
            labels["nvidia.com/gpu.count"] = str(self.gpus_per_node)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "status": {
                "capacity": resources,
                "allocatable": dict(resources),
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": K8S_VERSION,
                    "kubeProxyVersion": K8S_VERSION,
                    "containerRuntimeVersion": "kwok://fake",
                    "kernelVersion": "kwok",
                    "osImage": "kwok fake node",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            },
        }

    def _create_nodes(self) -> None:
        names = self.node_names
        if not names:
            return
        gpu = {f"kwok-gpu-{i}" for i in range(self.gpu_nodes)}
        self.kubectl(
            "create", "-f", "-", input={"apiVersion": "v1", "kind": "List",
                                        "items": [self._node_manifest(n, n in gpu) for n in names]}
        )  # fmt: skip

        def all_ready() -> bool:
            self.check_alive()
            nodes = self.get_json("nodes")["items"]
            ready = set()
            for node in nodes:
                conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
                taints = {t["key"] for t in node.get("spec", {}).get("taints", []) or []}
                if conditions.get("Ready") == "True" and not taints & {
                    "node.kubernetes.io/not-ready",
                    "node.kubernetes.io/unreachable",
                }:
                    ready.add(node["metadata"]["name"])
            return set(names) <= ready

        try:
            wait_for(all_ready, self.start_timeout, interval=0.25, description="the fake nodes to be Ready")
        except TimeoutError as e:
            kwok = next(c for c in self._components if c.name == "kwok")
            raise self._component_error(kwok, str(e)) from e

    def _wait_default_service_account(self) -> None:
        # Proves the controller manager's service-account controller runs; pods need the SA to be admitted.
        def exists() -> bool:
            self.check_alive()
            return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

        try:
            wait_for(exists, self.start_timeout, interval=0.25, description="serviceaccount default/default")
        except TimeoutError as e:
            kcm = next(c for c in self._components if c.name == "kube-controller-manager")
            raise self._component_error(kcm, str(e)) from e


def start_control_plane(
    workdir: str | os.PathLike[str],
    *,
    kubeconfig_out: str | os.PathLike[str] | None = None,
    clean: bool = True,
    **kwargs: Any,
) -> ControlPlane:
    """Start a :class:`ControlPlane` in ``workdir`` (emptied first if ``clean``) and wait until it is usable;
    copy its admin kubeconfig to ``kubeconfig_out`` if given. ``kwargs`` go to :class:`ControlPlane`."""
    workdir = Path(workdir)
    if clean and workdir.exists():
        shutil.rmtree(workdir)
    cp = ControlPlane(workdir, **kwargs)
    cp.start()
    if kubeconfig_out is not None:
        out = Path(kubeconfig_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cp.kubeconfig, out)
        out.chmod(0o600)
    return cp


def format_timings(cp: ControlPlane) -> str:
    """One line: the start-up time in all and per phase."""
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in cp.timings.items() if k != "total")
    return f"control plane ready in {cp.timings.get('total', 0.0):.1f}s ({phases})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.cluster.controlplane``: run a dev cluster in the foreground until Ctrl-C/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.controlplane",
        description="Run a local Kubernetes control plane (etcd, kube-apiserver, controller manager, scheduler, "
        "kwok fake nodes) in the foreground.",
    )
    parser.add_argument("--kubeconfig", default=".cache/dev-cluster/kubeconfig", help="where to write the admin "
                        "kubeconfig (default: %(default)s)")  # fmt: skip
    parser.add_argument("--workdir", default=".cache/dev-cluster/state", help="state and logs, emptied at start "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--bin-dir", default=None, help="binaries (default: $RLJOB_K8S_BIN or the cache of "
                        "hack/cluster-bins.sh)")  # fmt: skip
    parser.add_argument("--cpu-nodes", type=int, default=3)
    parser.add_argument("--gpu-nodes", type=int, default=1)
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    kubeconfig = Path(args.kubeconfig).resolve()
    try:
        cp = start_control_plane(
            args.workdir,
            kubeconfig_out=kubeconfig,
            bin_dir=args.bin_dir,
            cpu_nodes=args.cpu_nodes,
            gpu_nodes=args.gpu_nodes,
        )
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        print(format_timings(cp), flush=True)
        print(f"API server: {cp.server}   logs: {cp.logs_dir}", flush=True)
        print(f"\n  export KUBECONFIG={kubeconfig}\n  kubectl get nodes\n", flush=True)
        print(f"(kubectl is in {cp.bin_dir}) Ctrl-C stops the cluster.", flush=True)
        while not stop.wait(1.0):
            cp.check_alive()
        print("stopping ...", flush=True)
        return 0
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
