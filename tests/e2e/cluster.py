"""A one-node Kubernetes cluster with real containers, for the end-to-end tests and `make e2e-cluster`.

Everything runs on this machine inside one network namespace made for it (``rljob-e2e``): the process that
starts the cluster joins it first (``setns``), so every process it starts lives there too:

* the project's control plane (:class:`tests.cluster.controlplane.ControlPlane`, no kwok nodes) with
  kube-apiserver on :data:`NODE_IP`, an address on the namespace's loopback device,
* containerd (Debian's) with runc and the CRI plugin, its own socket/state/root (images stay cached in
  ``~/.cache/rljob/e2e/containerd``), CNI ``bridge`` + ``host-local`` (Debian's containernetworking-plugins)
  on :data:`POD_CIDR`, a sandbox image built from ``hack/e2e/pause``,
* kubelet v1.35 (cgroup v1 accepted with ``failCgroupV1: false``, cgroupfs driver) as node :data:`NODE_NAME`,
* kube-proxy (iptables mode) for Services, CoreDNS (``hack/e2e/coredns``, a trimmed build) as cluster DNS,
* kube-router v2.1.0 with only its network policy controller (iptables + ipset) enforcing NetworkPolicies,
* images from the local Docker daemon, loaded with ``docker save | ctr images import`` (no registry).

Nothing listens outside the namespace; the namespace has no route out. Binaries: ``hack/e2e-cluster.sh bins``.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import SERVICE_CLUSTER_IP_RANGE, ControlPlane, default_bin_dir, wait_for
from tests.cluster.pki import PKI, write_kubeconfig
from tests.cluster.processes import die_with_parent, tail

ROOT = Path(__file__).resolve().parents[2]
NETNS = "rljob-e2e"
NODE_NAME = "rljob-e2e-node"
NODE_IP = "10.250.0.1"
POD_CIDR = "10.244.0.0/24"
CLUSTER_DNS = "10.96.0.10"
CACHE = Path(os.environ.get("RLJOB_CACHE") or Path.home() / ".cache" / "rljob")
RUN_DIR = Path("/run/rljob-e2e")  # sockets and runtime state (tmpfs)
STATE_DIR = Path("/var/lib/rljob-e2e")  # kubelet's root, CNI IPAM
CONTAINERD_ROOT = CACHE / "e2e" / "containerd"  # images survive between runs
PAUSE_IMAGE = "rljob.local/pause:1"
COREDNS_IMAGE = "rljob.local/coredns:1"
E2E_BINARIES = ("kubelet", "kube-proxy", "kube-router", "coredns", "pause")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CLONE_NEWNET = 0x40000000
#: Whether something on this node enforces NetworkPolicies (see images/README.md, "NetworkPolicy enforcement").
NETWORK_POLICY_ENFORCER = True  # kube-router's network policy controller (Cluster._start_netpol)
NO_ENFORCER_REASON = ""
#: A rule kube-router appends to its top-level chains at the end of every completed full sync: once it is in
#: the filter table, the policies that existed when the sync began are enforced.
KUBE_ROUTER_SYNCED = "rule to explicitly ACCEPT traffic that comply to network policies"


def bin_dir() -> Path:
    return Path(os.environ.get("RLJOB_K8S_BIN") or default_bin_dir())


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the e2e cluster (empty: all there)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (kubelet, containerd, network namespaces)")
    for cmd in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "ipset", "docker", "nsenter"):
        if not shutil.which(cmd):
            problems.append(f"`{cmd}` not found (hack/e2e-cluster.sh prereqs)")
    if not any(os.access(Path(d) / "bridge", os.X_OK) for d in CNI_BIN_DIRS):
        problems.append("CNI plugins missing (apt-get install containernetworking-plugins)")
    for b in (*E2E_BINARIES, "kubectl", "helm", "kube-apiserver", "etcd"):
        if not os.access(bin_dir() / b, os.X_OK):
            problems.append(f"{bin_dir() / b} missing (hack/e2e-cluster.sh bins)")
    return problems


def sh(*args: str | os.PathLike[str], check: bool = True, input: bytes | str | None = None,
       timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, input=input, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------
# The network namespace


def netns_path() -> Path:
    return Path("/run/netns") / NETNS


def ensure_netns() -> None:
    """Create the namespace (idempotent): loopback up, the node address on it, br_netfilter-style sysctls."""
    if not netns_path().exists():
        sh("ip", "netns", "add", NETNS)
    ns = ["ip", "netns", "exec", NETNS]
    sh(*ns, "ip", "link", "set", "lo", "up")
    if NODE_IP not in sh(*ns, "ip", "-4", "addr", "show", "dev", "lo").stdout:
        sh(*ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    for key, value in (
        ("net.ipv4.ip_forward", "1"),
        # Pod-to-Service traffic between pods on the same bridge must go through iptables (kube-proxy's DNAT).
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ):
        sh(*ns, "sysctl", "-qw", f"{key}={value}", check=False)


def enter_netns() -> None:
    """Move this process (all its threads' future children) into the namespace; only the network namespace, so
    mounts and cgroups stay shared with the host as kubelet and containerd need."""
    current = os.readlink("/proc/self/ns/net")
    target = os.stat(netns_path())
    own = os.stat("/proc/self/ns/net")
    if (own.st_dev, own.st_ino) == (target.st_dev, target.st_ino):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path(), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns_path()}) from {current}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns() -> bool:
    with contextlib.suppress(OSError):
        a, b = os.stat("/proc/self/ns/net"), os.stat(netns_path())
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    return False


# ----------------------------------------------------------------------------------------------------------------
# Images


def docker_image_id(ref: str) -> str | None:
    res = sh("docker", "image", "inspect", "-f", "{{.Id}}", ref, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def normalized(ref: str) -> str:
    """The name containerd gives a Docker reference (``rljob/x:1`` -> ``docker.io/rljob/x:1``)."""
    first = ref.split("/")[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def build_tiny_image(ref: str, binary: Path, entrypoint: Sequence[str], user: str = "65535:65535") -> None:
    """An image holding one static binary, made with `docker import` (there is no registry and no FROM)."""
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    labelled = sh("docker", "image", "inspect", "-f", '{{index .Config.Labels "rljob.binary"}}', ref, check=False)
    if labelled.returncode == 0 and labelled.stdout.strip() == digest:
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "etc").mkdir(parents=True)
        shutil.copy2(binary, root / binary.name)
        (root / "etc" / "passwd").write_text("root:x:0:0::/:/nonexistent\nnobody:x:65534:65534::/:/nonexistent\n")
        tar = Path(tmp) / "rootfs.tar"
        sh("tar", "--numeric-owner", "-C", root, "-cf", tar, ".")
        sh("docker", "import",
           "-c", f"ENTRYPOINT {json.dumps(list(entrypoint))}", "-c", f"USER {user}",
           "-c", f"LABEL rljob.binary={digest}", tar, ref)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    """Start with :meth:`start` (after :func:`ensure_netns` + :func:`enter_netns`), stop with :meth:`stop`."""

    def __init__(self, workdir: Path, images: Sequence[str] = ()) -> None:
        self.workdir = workdir.resolve()
        self.images = list(images)
        self.cp: ControlPlane | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = self.workdir / "logs"
        self.timings: dict[str, float] = {}
        self.bin = bin_dir()
        self.containerd_sock = RUN_DIR / "containerd" / "containerd.sock"
        self.kubelet_root = STATE_DIR / "kubelet"

    # ---- helpers ----

    @property
    def kubeconfig(self) -> Path:
        assert self.cp is not None
        return self.cp.kubeconfig

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.cp is not None
        return self.cp.kubectl(*args, input=input, check=check, timeout=timeout)

    def ctr(self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 900) -> subprocess.CompletedProcess[Any]:
        cmd = ["ctr", "--address", str(self.containerd_sock), "--namespace", "k8s.io", *args]
        return subprocess.run(cmd, check=check, capture_output=True, input=input, timeout=timeout)

    def _spawn(self, name: str, args: Sequence[str | os.PathLike[str]], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        log.write(f"# {' '.join(map(str, args))}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [str(a) for a in args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent(os.getpid()), env=env,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def _alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(self.logs / f'{name}.log')}")

    def _phase(self, name: str, fn: Any) -> None:
        t = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - t, 1)

    # ---- start ----

    def start(self) -> Cluster:
        if not in_netns():
            raise RuntimeError(f"call ensure_netns() and enter_netns() first (network namespace {NETNS})")
        t0 = time.monotonic()
        try:
            self._phase("cleanup", self._cleanup_leftovers)
            self._phase("control-plane", self._start_control_plane)
            self._phase("containerd", self._start_containerd)
            self._phase("images", self._load_images)
            self._phase("kubelet", self._start_kubelet)
            self._phase("kube-proxy", self._start_kube_proxy)
            self._phase("netpol", self._start_netpol)
            self._phase("dns", self._start_dns)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - t0, 1)
        return self

    def _start_control_plane(self) -> None:
        self.cp = ControlPlane(self.workdir / "controlplane", bin_dir=self.bin, cpu_nodes=0, gpu_nodes=0,
                               apiserver_address=NODE_IP, start_timeout=180)  # fmt: skip
        self.cp.start()

    def _containerd_config(self) -> Path:
        cni_bin = next(d for d in CNI_BIN_DIRS if os.access(Path(d) / "bridge", os.X_OK))
        conf_dir = RUN_DIR / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-rljob.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "rljob-e2e",
            "plugins": [
                {
                    "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                    "ipam": {"type": "host-local", "dataDir": str(STATE_DIR / "cni-ipam"),
                             "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=2))  # fmt: skip
        config = f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{RUN_DIR / 'containerd-state'}"
[grpc]
  address = "{self.containerd_sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE (this machine's sandbox drops it), so the negative oom_score_adj that kubelet
  # asks for sandboxes (-998) and Guaranteed pods (-997) fails in runc ("failed to update /proc/self/oom_score_adj:
  # Permission denied"); this clamps them at containerd's own score.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{RUN_DIR / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{conf_dir}"
"""
        path = RUN_DIR / "containerd.toml"
        path.write_text(config)
        return path

    def _start_containerd(self) -> None:
        for d in (RUN_DIR, STATE_DIR, CONTAINERD_ROOT, self.containerd_sock.parent):
            d.mkdir(parents=True, exist_ok=True)
        self._spawn("containerd", ["containerd", "--config", self._containerd_config()])

        def up() -> bool:
            self._alive("containerd")
            return self.ctr("version", check=False).returncode == 0

        wait_for(up, 60, 0.2, "containerd")

    def _load_images(self) -> None:
        build_tiny_image(PAUSE_IMAGE, self.bin / "pause", ["/pause"])
        build_tiny_image(COREDNS_IMAGE, self.bin / "coredns", ["/coredns"])
        listed = self.ctr("images", "ls").stdout.decode()
        marks = STATE_DIR / "imported"
        marks.mkdir(parents=True, exist_ok=True)
        for ref in [PAUSE_IMAGE, COREDNS_IMAGE, *self.images]:
            image_id = docker_image_id(ref)
            if image_id is None:
                raise RuntimeError(f"image {ref} is not in the local Docker daemon (hack/images.sh builds rljob's)")
            full = normalized(ref)
            mark = CONTAINERD_ROOT / f"imported-{hashlib.sha256(full.encode()).hexdigest()[:16]}"
            imported = mark.read_text() if mark.exists() else ""
            if imported == image_id and full in listed:
                continue
            # An older build of this name goes first, by its name and by the image-ID name the CRI gave it, with
            # containerd's garbage collection run at once: an import over the name alone leaves the old layers
            # referenced, and the cache grew by a runtime image (about 7 GB) with every dependency change.
            stale = [ref for ref in (full, imported) if ref and ref in listed]
            if stale:
                self.ctr("images", "rm", "--sync", *stale, check=False)
            t = time.monotonic()
            save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
            assert save.stdout is not None
            res = subprocess.run(
                ["ctr", "--address", str(self.containerd_sock), "--namespace", "k8s.io", "images", "import",
                 "-"],
                stdin=save.stdout, capture_output=True, timeout=1800,
            )  # fmt: skip
            save.stdout.close()
            if save.wait() != 0 or res.returncode != 0:
                raise RuntimeError(f"loading {ref} into containerd failed: {res.stderr.decode()[-2000:]}")
            mark.write_text(image_id)
            self.timings[f"import {ref}"] = round(time.monotonic() - t, 1)

    def _kubelet_credentials(self) -> tuple[Path, Path]:
        assert self.cp is not None
        pki = PKI(self.cp.pki_dir)
        crt, key = pki.make_cert("kubelet-client", f"system:node:{NODE_NAME}", ["system:nodes"], client=True)
        kubeconfig = write_kubeconfig(self.workdir / "kubelet.conf", self.cp.server, self.cp.ca_crt, crt, key,
                                       f"system:node:{NODE_NAME}")  # fmt: skip
        proxy_crt, proxy_key = pki.make_cert("kube-proxy", "system:kube-proxy", client=True)
        proxy_conf = write_kubeconfig(self.workdir / "kube-proxy.conf", self.cp.server, self.cp.ca_crt, proxy_crt,
                                       proxy_key, "system:kube-proxy")  # fmt: skip
        # The API server's kubelet client (logs, exec) may use the kubelet API; kube-proxy gets its usual role.
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "rljob-e2e:apiserver-kubelet-client"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kube-apiserver-kubelet-client"}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "rljob-e2e:node-proxier"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-proxy"}]},
        ]))  # fmt: skip
        return kubeconfig, proxy_conf

    def _start_kubelet(self) -> None:
        assert self.cp is not None
        kubeconfig, self.proxy_kubeconfig = self._kubelet_credentials()
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This kernel offers cgroup v1 only; kubelet 1.35 refuses it unless told so.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.cp.ca_crt)}},
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [CLUSTER_DNS],
            "clusterDomain": "cluster.local",
            "resolvConf": "",
            "failSwapOn": False,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "protectKernelDefaults": False,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "podPidsLimit": -1,
            "maxPods": 50,
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "localStorageCapacityIsolation": True,
            "logging": {"format": "text"},
        }  # fmt: skip
        path = self.workdir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn("kubelet", [
            self.bin / "kubelet",
            f"--config={path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_root}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--node-labels=rljob.dev/e2e=true",
            "--v=1",
        ])  # fmt: skip

        def ready() -> bool:
            self._alive("kubelet")
            node = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if node.returncode != 0:
                return False
            conditions = {c["type"]: c["status"] for c in json.loads(node.stdout)["status"].get("conditions", [])}
            return conditions.get("Ready") == "True"

        wait_for(ready, 180, 1.0, f"node {NODE_NAME} Ready")

    def _start_kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.proxy_kubeconfig)},
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Inside a network namespace nf_conntrack_max is the host's: leave it alone.
            "conntrack": {"maxPerCore": 0, "min": 0},
        }
        path = self.workdir / "kube-proxy-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn("kube-proxy", [self.bin / "kube-proxy", f"--config={path}", "--v=1"])

        def synced() -> bool:
            self._alive("kube-proxy")
            rules = sh("iptables-save", "-t", "nat", check=False).stdout
            return "KUBE-SVC-" in rules and "default/kubernetes:https" in rules

        wait_for(synced, 60, 0.5, "kube-proxy's rules for the kubernetes Service")

    def _kube_router_kubeconfig(self) -> Path:
        """kube-router's own identity with what its network policy controller reads (it builds informers for
        Services, Endpoints and EndpointSlices too, whichever controllers run), as its DaemonSet's ClusterRole
        grants in a real cluster; no write access, since the router and service proxy, which annotate nodes and
        report load balancer IPs, are off."""
        assert self.cp is not None
        crt, key = PKI(self.cp.pki_dir).make_cert("kube-router", "system:kube-router", client=True)
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "rljob-e2e:kube-router"},
             "rules": [
                 {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                  "verbs": ["get", "list", "watch"]},
                 {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                 {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
             ]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "rljob-e2e:kube-router"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rljob-e2e:kube-router"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-router"}]},
        ]))  # fmt: skip
        return write_kubeconfig(self.workdir / "kube-router.conf", self.cp.server, self.cp.ca_crt, crt, key,
                                 "system:kube-router")  # fmt: skip

    def _start_netpol(self) -> None:
        """NetworkPolicy enforcement: kube-router's network policy controller alone (iptables + ipset).

        Its router (BGP, pod routes, its own CNI config) and service proxy (IPVS) are off: the bridge CNI and
        kube-proxy do those jobs here, and both disabled controllers are where kube-router v2.1.0's published
        advisories lie (images/README.md). It finds the node by name and takes the node's InternalIP
        (``--node-ip``) as the address whose pods it polices (``status.hostIP``); the policy controller needs no
        pod CIDR. Its chains hook INPUT, FORWARD (with ``physdev`` for bridged frames, which br_netfilter shows to
        iptables after kube-proxy's DNAT, so Service traffic is judged by its real endpoint) and OUTPUT.
        """
        kubeconfig = self._kube_router_kubeconfig()
        self._spawn("kube-router", [
            self.bin / "kube-router",
            f"--kubeconfig={kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-cni=false",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Its health server would listen on every address of the namespace, pods' gateway included, and
            # nothing here asks it: readiness is read from the filter table (below). Metrics stay off by default.
            "--health-port=0",
            "--v=1",
        ])  # fmt: skip

        def synced() -> bool:
            self._alive("kube-router")
            rules = sh("iptables-save", "-t", "filter", check=False).stdout
            return "-j KUBE-ROUTER-FORWARD" in rules and KUBE_ROUTER_SYNCED in rules

        wait_for(synced, 90, 0.5, "kube-router's first network policy sync")

    def _start_dns(self) -> None:
        manifest = (Path(__file__).resolve().parent / "manifests" / "coredns.yaml").read_text()
        self.kubectl("apply", "-f", "-", input=manifest.replace("__IMAGE__", COREDNS_IMAGE).replace("__DNS_IP__", CLUSTER_DNS))
        self.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s", timeout=200)

    # ---- stop ----

    def stop(self) -> None:
        """Delete every pod (kubelet tears them down), stop the processes, remove leftovers. Idempotent."""
        if self.cp is not None and self.procs.get("kubelet") and self.procs["kubelet"].poll() is None:
            with contextlib.suppress(Exception):
                # Controllers first (they would recreate the pods), then every pod: kubelet tears them down properly.
                self.kubectl("delete", "deployments,statefulsets,daemonsets,replicasets,jobs", "--all", "-A",
                             "--wait=false", check=False, timeout=30)  # fmt: skip
                self.kubectl("delete", "pods", "--all", "-A", "--wait=false", "--grace-period=3", check=False, timeout=30)
                wait_for(lambda: not self.ctr("tasks", "ls", "-q", timeout=10).stdout.strip(), 40, 1.0, "containers gone")
        for name in ("kube-router", "kube-proxy", "kubelet"):
            self._terminate(name)
        self._kill_containers()
        self._terminate("containerd")
        if self.cp is not None:
            self.cp.stop()
        self._cleanup_leftovers()

    def _terminate(self, name: str, grace: float = 10) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def _kill_containers(self) -> None:
        if not self.containerd_sock.exists():
            return
        with contextlib.suppress(Exception):
            for task in self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.decode().split():
                self.ctr("tasks", "kill", "-s", "SIGKILL", "--all", task, check=False, timeout=30)
            time.sleep(1)
            for task in self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.decode().split():
                self.ctr("tasks", "delete", "-f", task, check=False, timeout=30)
            for container in self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.decode().split():
                self.ctr("containers", "delete", container, check=False, timeout=30)

    def _cleanup_leftovers(self) -> None:
        """What a killed run can leave: shims of our containerd, processes in kubelet's cgroups, mounts under our
        state directories, pod network namespaces, CNI IP reservations."""
        sock = str(self.containerd_sock)
        for proc in glob.glob("/proc/[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                argv = Path(proc).read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
                    os.kill(int(proc.split("/")[2]), signal.SIGKILL)
        for procs in glob.glob("/sys/fs/cgroup/*/kubepods/**/cgroup.procs", recursive=True):
            with contextlib.suppress(OSError):
                for pid in Path(procs).read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        ours = [m for m in mounts if m.startswith((str(STATE_DIR), str(RUN_DIR), str(CONTAINERD_ROOT)))]
        for m in sorted(ours, key=len, reverse=True):
            sh("umount", "-l", m, check=False)
        for d in (STATE_DIR / "kubelet", STATE_DIR / "cni-ipam", RUN_DIR / "containerd-state"):
            shutil.rmtree(d, ignore_errors=True)
        # Pod network namespaces containerd created (cni-<uuid>); the veths die with them.
        for ns in glob.glob("/run/netns/cni-*"):
            sh("umount", ns, check=False)
            with contextlib.suppress(OSError):
                os.unlink(ns)
        for cg in sorted(glob.glob("/sys/fs/cgroup/*/kubepods/**/", recursive=True), key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(cg)


OPERATOR_NAMESPACE = "rljob-system"


def helm(c: Cluster, home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    from tests.e2e.target import tool

    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KUBECONFIG": str(c.kubeconfig), "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
           "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data")}  # fmt: skip
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def operator_installed(c: Cluster, home: Path) -> bool:
    """Whether the release `rljob` is installed in the operator's namespace already."""
    return helm(c, home, "status", "rljob", "--namespace", OPERATOR_NAMESPACE, timeout=60).returncode == 0


def install_operator(c: Cluster, values: dict[str, Any], home: Path) -> float:
    """The operator, with the project's Helm chart and these values, into rljob-system (Pod Security: restricted).
    Returns the seconds it took."""
    t0 = time.monotonic()
    c.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    c.kubectl("label", "namespace", OPERATOR_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    home.mkdir(parents=True, exist_ok=True)
    values_file = home / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    res = helm(c, home, "install", "rljob", str(ROOT / "charts" / "rljob"), "--namespace", OPERATOR_NAMESPACE,
                "-f", str(values_file), "--wait", "--timeout", "240s")
    if res.returncode != 0:
        pods = c.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide", check=False).stdout
        logs = c.kubectl("logs", "-n", OPERATOR_NAMESPACE, "deploy/rljob", "--tail=40", check=False).stdout
        raise RuntimeError(f"helm install failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{pods}\n{logs}")
    return time.monotonic() - t0


def delete_netns() -> None:
    if netns_path().exists():
        sh("ip", "netns", "delete", NETNS, check=False)


def up(workdir: Path, images: Sequence[str]) -> Cluster:
    ensure_netns()
    enter_netns()
    return Cluster(workdir, images).start()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tests.e2e.cluster [--workdir DIR] [IMAGE...]`: run the cluster in the foreground until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.e2e.cluster")
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "e2e-cluster"))
    parser.add_argument("--check", action="store_true", help="start, print the timings, stop")
    parser.add_argument("--operator", metavar="VERSION", help="also install the operator with the Helm chart")
    parser.add_argument("images", nargs="*")
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print("e2e-cluster: cannot start:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    cluster = up(workdir, args.images)
    try:
        if args.operator:
            from tests.e2e.target import LOCAL_REGISTRY, Target

            took = install_operator(cluster, Target(LOCAL_REGISTRY).chart_values(), workdir / "helm-home")
            print(f"operator installed with the Helm chart in {took:.0f}s (namespace {OPERATOR_NAMESPACE})", flush=True)
        print(f"e2e cluster up in {cluster.timings['total']}s: {cluster.timings}", flush=True)
        print(f"kubeconfig: {cluster.kubeconfig} (API server {cluster.cp.server if cluster.cp else ''}, in network "
              f"namespace {NETNS}):\n  nsenter --net=/run/netns/{NETNS} {bin_dir()}/kubectl "
              f"--kubeconfig={cluster.kubeconfig} get pods -A", flush=True)  # fmt: skip
        while not stop and not args.check:
            time.sleep(1)
        return 0
    finally:
        cluster.stop()
        delete_netns()


if __name__ == "__main__":
    sys.exit(main())
