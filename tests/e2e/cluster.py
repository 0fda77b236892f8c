"""A two-node Kubernetes cluster with real containers, for the end-to-end tests and `make e2e-cluster`.

Each node is a network namespace of this machine (:data:`NODES`): ``rljob-e2e`` holds the control plane and the
CPU node (:data:`NODE_NAME`), ``rljob-e2e-gpu`` the GPU pool's node (:data:`GPU_NODE`: labelled and tainted as
a cloud's GPU node pool is, advertising one ``nvidia.com/gpu`` as a device plugin would, though no GPU is
there). A veth pair joins the two namespaces, with a route to each node's address and pod CIDR: pod traffic
between nodes is routed, unmasqueraded, through both nodes' filter tables, where each node's kube-router polices
its own pods. The process that starts the cluster joins the first namespace (``setns``); the second node's
processes are started in theirs with ``nsenter --net``. Per node:

* containerd (Debian's) with runc and the CRI plugin, its own socket/state/root (images stay cached in
  ``~/.cache/rljob/e2e/containerd*``), CNI ``bridge`` + ``host-local`` (Debian's containernetworking-plugins)
  on the node's pod CIDR, a sandbox image built from ``hack/e2e/pause``,
* kubelet v1.36 (cgroup v1 accepted with ``failCgroupV1: false``, cgroupfs driver, a cgroup root and a pod log
  directory of its own),
* kube-proxy (iptables mode) for Services,
* kube-router v2.1.0 with only its network policy controller (iptables + ipset) enforcing NetworkPolicies,
* images from the local Docker daemon, loaded with ``docker save | ctr images import`` into the first node (no
  registry); the second node's image store is a copy of the first's, made of hard links.

Once: the project's control plane (:class:`tests.cluster.controlplane.ControlPlane`, no kwok nodes) with
kube-apiserver on :data:`NODE_IP` (an address on the first namespace's loopback device), and CoreDNS
(``hack/k8s/coredns``, a trimmed build) as cluster DNS.

Nothing listens outside the namespaces; they have no route out. Binaries: ``hack/e2e-cluster.sh bins``.
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
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from tests.cluster.controlplane import SERVICE_CLUSTER_IP_RANGE, ControlPlane, default_bin_dir, wait_for
from tests.cluster.pki import PKI, write_kubeconfig
from tests.cluster.processes import die_with_parent, tail

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RLJOB_CACHE") or Path.home() / ".cache" / "rljob")
RUN_DIR = Path("/run/rljob-e2e")  # sockets and runtime state (tmpfs)
STATE_DIR = Path("/var/lib/rljob-e2e")  # kubelets' roots, CNI IPAM, the checkpoint volumes
CLUSTER_CIDR = "10.244.0.0/16"  # every node's pod CIDR lies in it
CLUSTER_DNS = "10.96.0.10"
PAUSE_IMAGE = "rljob.local/pause:1"
COREDNS_IMAGE = "rljob.local/coredns:1"
E2E_BINARIES = ("kubelet", "kube-proxy", "kube-router", "coredns", "pause")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CLONE_NEWNET = 0x40000000
#: Whether something on these nodes enforces NetworkPolicies (see images/README.md, "NetworkPolicy enforcement").
NETWORK_POLICY_ENFORCER = True  # kube-router's network policy controller (Cluster._start_netpol)
NO_ENFORCER_REASON = ""
#: A rule kube-router appends to its top-level chains at the end of every completed full sync: once it is in
#: the filter table, the policies that existed when the sync began are enforced.
KUBE_ROUTER_SYNCED = "rule to explicitly ACCEPT traffic that comply to network policies"
#: How a GPU node pool marks its nodes: the label NVIDIA's GPU feature discovery sets, and the taint GKE and AKS
#: put on GPU pools, so that only pods that tolerate it (and ask for the pool) land there.
GPU_LABEL = ("nvidia.com/gpu.present", "true")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Node:
    """One node: its network namespace, addresses, and the directories its containerd and kubelet own."""

    name: str
    netns: str
    ip: str  # on the namespace's loopback device; the kubelet's, kube-proxy's and kube-router's node address
    pod_cidr: str
    suffix: str  # "" for the first node: its paths are the ones a one-node cluster had
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    #: Advertised in the node's status as a device plugin would (https://kubernetes.io/docs/tasks/administer-cluster/
    #: extended-resource-node/): the scheduler places pods that ask for it, no device is there.
    extended_resources: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return RUN_DIR / self.suffix if self.suffix else RUN_DIR

    @property
    def state_dir(self) -> Path:
        return STATE_DIR / self.suffix if self.suffix else STATE_DIR

    @property
    def containerd_root(self) -> Path:
        """Kept between runs: the images stay imported."""
        return CACHE / "e2e" / (f"containerd-{self.suffix}" if self.suffix else "containerd")

    @property
    def containerd_sock(self) -> Path:
        return self.run_dir / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        """Where the kubelet keeps its containers' logs: a kubelet removes the log directories of pods it does not
        know under its own, which with a shared one were the other node's running pods' (their logs were cut)."""
        return self.state_dir / "pod-logs" if self.suffix else Path("/var/log/pods")

    @property
    def cgroup_root(self) -> str:
        """Each kubelet keeps its pods' cgroups under a root of its own: a kubelet kills the processes of pod cgroups
        it does not know under its root, which would be the other node's pods with a shared one."""
        return f"/rljob-e2e-{self.suffix}" if self.suffix else "/"

    def proc(self, name: str) -> str:
        return f"{name}-{self.suffix}" if self.suffix else name

    def run_in(self) -> list[str]:
        """The prefix that starts a command in this node's network namespace (only that namespace: mounts and
        cgroups stay the host's, as kubelet and containerd need)."""
        return ["nsenter", f"--net={netns_path(self.netns)}"]


CPU_NODE = Node("rljob-e2e-node", "rljob-e2e", "10.250.0.1", "10.244.0.0/24", "")
GPU_NODE = Node("rljob-e2e-gpu", "rljob-e2e-gpu", "10.250.0.2", "10.244.1.0/24", "gpu",
                labels={GPU_LABEL[0]: GPU_LABEL[1]}, taints=(GPU_TAINT,), extended_resources={"nvidia.com/gpu": "1"})
NODES = (CPU_NODE, GPU_NODE)
# The first node's facts under their one-node names: the control plane and the test process live in its namespace.
NETNS, NODE_NAME, NODE_IP, POD_CIDR = CPU_NODE.netns, CPU_NODE.name, CPU_NODE.ip, CPU_NODE.pod_cidr
#: The veth pair between the two namespaces, by namespace.
LINKS = {CPU_NODE.netns: "e2e-to-gpu", GPU_NODE.netns: "e2e-to-cpu"}


def bin_dir() -> Path:
    return Path(os.environ.get("RLJOB_K8S_BIN") or default_bin_dir())


def missing_prerequisites(binaries: bool = True) -> list[str]:
    """What this machine lacks to run the e2e cluster (empty: all there); without ``binaries``, what it lacks to
    import images into the nodes (no Kubernetes binary is needed for that)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (kubelet, containerd, network namespaces)")
    for cmd in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "ipset", "docker", "nsenter"):
        if not shutil.which(cmd):
            problems.append(f"`{cmd}` not found (hack/e2e-cluster.sh prereqs)")
    if not any(os.access(Path(d) / "bridge", os.X_OK) for d in CNI_BIN_DIRS):
        problems.append("CNI plugins missing (apt-get install containernetworking-plugins)")
    for b in (*E2E_BINARIES, "kubectl", "helm", "kube-apiserver", "etcd") if binaries else ():
        if not os.access(bin_dir() / b, os.X_OK):
            problems.append(f"{bin_dir() / b} missing (hack/e2e-cluster.sh bins)")
    return problems


def sh(*args: str | os.PathLike[str], check: bool = True, input: bytes | str | None = None,
       timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, input=input, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------
# The network namespace


def netns_path(name: str = CPU_NODE.netns) -> Path:
    return Path("/run/netns") / name


def ensure_netns() -> None:
    """Create the nodes' namespaces and the link between them (idempotent): loopback up with the node's address,
    forwarding and br_netfilter-style sysctls, a route to the other node's address and to its pod CIDR."""
    for node in NODES:
        if not netns_path(node.netns).exists():
            sh("ip", "netns", "add", node.netns)
        ip = ["ip", "-n", node.netns]
        sh(*ip, "link", "set", "lo", "up")
        if node.ip not in sh(*ip, "-4", "addr", "show", "dev", "lo").stdout:
            sh(*ip, "addr", "add", f"{node.ip}/32", "dev", "lo")
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            # Pod-to-Service traffic between pods on the same bridge must go through iptables (kube-proxy's DNAT).
            ("net.bridge.bridge-nf-call-iptables", "1"),
            # Replies from the other node come in on the link whatever their source: no reverse-path filter.
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ):
            sh("ip", "netns", "exec", node.netns, "sysctl", "-qw", f"{key}={value}", check=False)
    a, b = NODES
    if sh("ip", "-n", a.netns, "link", "show", LINKS[a.netns], check=False).returncode != 0:
        sh("ip", "-n", a.netns, "link", "add", LINKS[a.netns], "type", "veth", "peer", "name", LINKS[b.netns],
           "netns", b.netns)  # fmt: skip
    for node, other in ((a, b), (b, a)):
        ip, link = ["ip", "-n", node.netns], LINKS[node.netns]
        sh(*ip, "link", "set", link, "up")
        sh(*ip, "route", "replace", f"{other.ip}/32", "dev", link, "src", node.ip)
        sh(*ip, "route", "replace", other.pod_cidr, "via", other.ip, "dev", link, "onlink")


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

    def __init__(self, workdir: Path, images: Sequence[str] = (), nodes: Sequence[Node] = NODES) -> None:
        self.workdir = workdir.resolve()
        self.images = list(images)
        self.nodes = tuple(nodes)
        self.cp: ControlPlane | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = self.workdir / "logs"
        self.timings: dict[str, float] = {}
        self.bin = bin_dir()

    # ---- helpers ----

    @property
    def kubeconfig(self) -> Path:
        assert self.cp is not None
        return self.cp.kubeconfig

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.cp is not None
        return self.cp.kubectl(*args, input=input, check=check, timeout=timeout)

    def ctr(self, *args: str, node: Node = CPU_NODE, check: bool = True, input: bytes | None = None,
            stdin: IO[bytes] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[Any]:
        cmd = ["ctr", "--address", str(node.containerd_sock), "--namespace", "k8s.io", *args]
        if stdin is not None:
            return subprocess.run(cmd, check=check, capture_output=True, stdin=stdin, timeout=timeout)
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

    def _each_node(self, fn: Any) -> Any:
        return lambda: [fn(node) for node in self.nodes]

    # ---- start ----

    def start(self) -> Cluster:
        if not in_netns():
            raise RuntimeError(f"call ensure_netns() and enter_netns() first (network namespace {NETNS})")
        t0 = time.monotonic()
        try:
            self._phase("cleanup", self._cleanup_leftovers)
            self._phase("control-plane", self._start_control_plane)
            self._phase("containerd", self._each_node(self._start_containerd))
            self._phase("images", self._load_images)
            self._phase("kubelet", self._start_kubelets)
            self._phase("kube-proxy", self._each_node(self._start_kube_proxy))
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

    def _containerd_config(self, node: Node) -> Path:
        cni_bin = next(d for d in CNI_BIN_DIRS if os.access(Path(d) / "bridge", os.X_OK))
        conf_dir = node.run_dir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-rljob.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "rljob-e2e",
            "plugins": [
                {
                    "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                    "ipam": {"type": "host-local", "dataDir": str(node.state_dir / "cni-ipam"),
                             "ranges": [[{"subnet": node.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=2))  # fmt: skip
        config = f"""version = 2
root = "{node.containerd_root}"
state = "{node.run_dir / 'containerd-state'}"
[grpc]
  address = "{node.containerd_sock}"
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
        Root = "{node.run_dir / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{conf_dir}"
"""
        path = node.run_dir / "containerd.toml"
        path.write_text(config)
        return path

    def _start_containerd(self, node: Node) -> None:
        for d in (node.run_dir, node.state_dir, node.containerd_root, node.containerd_sock.parent):
            d.mkdir(parents=True, exist_ok=True)
        name = node.proc("containerd")
        self._spawn(name, [*node.run_in(), "containerd", "--config", self._containerd_config(node)])

        def up() -> bool:
            self._alive(name)
            return self.ctr("version", node=node, check=False).returncode == 0

        wait_for(up, 60, 0.2, name)

    def _load_images(self) -> None:
        build_tiny_image(PAUSE_IMAGE, self.bin / "pause", ["/pause"])
        build_tiny_image(COREDNS_IMAGE, self.bin / "coredns", ["/coredns"])
        self.load_images([PAUSE_IMAGE, COREDNS_IMAGE, *self.images])

    def load_images(self, refs: Sequence[str]) -> None:
        """Each image that a node lacks (this build of it) imported into the first node, from `docker save`; every
        other node that lacks one then gets a copy of the first node's image store (:meth:`_copy_store`), so the
        machine's disk writes and unpacks a runtime image (about 7 GB) once, not once per node."""
        primary = self.nodes[0]
        listed = {node.name: self.ctr("images", "ls", node=node).stdout.decode() for node in self.nodes}
        lacking: dict[str, list[str]] = {node.name: [] for node in self.nodes}
        for ref in refs:
            image_id = docker_image_id(ref)
            if image_id is None:
                raise RuntimeError(f"image {ref} is not in the local Docker daemon (hack/images.sh builds rljob's)")
            full = normalized(ref)
            for node in self.nodes:
                mark = self._mark(node, full)
                if not (mark.exists() and mark.read_text() == image_id and full in listed[node.name]):
                    lacking[node.name].append(ref)
            if ref not in lacking[primary.name]:
                continue
            # The new build is imported over the name first, then the older build's image-ID name (the one the CRI
            # gave it) is removed with containerd's garbage collection run at once: the layers the two builds share
            # stay unpacked (a change to the operator rebuilds only the top layer of a runtime image of about 7 GB),
            # and the older build's own layers go, so the cache does not grow with every change.
            mark = self._mark(primary, full)
            previous = mark.read_text() if mark.exists() else ""
            t = time.monotonic()
            self._import(ref, primary)
            self._discard_layers(primary, full)
            mark.write_text(image_id)
            if previous and previous != image_id and previous in listed[primary.name]:
                self.ctr("images", "rm", "--sync", previous, node=primary, check=False)
            self.timings[f"import {ref}"] = round(time.monotonic() - t, 1)
        copies = [node for node in self.nodes[1:] if lacking[node.name]]
        if copies:
            t = time.monotonic()
            self._copy_store(primary, copies)
            self.timings[f"copy to {len(copies)} node(s)"] = round(time.monotonic() - t, 1)

    @staticmethod
    def _mark(node: Node, full_ref: str) -> Path:
        """The file beside a node's store that names the Docker image ID imported under this name."""
        return node.containerd_root / f"imported-{hashlib.sha256(full_ref.encode()).hexdigest()[:16]}"

    def _copy_store(self, source: Node, nodes: Sequence[Node]) -> None:
        """Each node's containerd root replaced by a copy of the source node's, made of hard links, with the
        containerds stopped meanwhile (before any kubelet runs: nothing of a node's own is lost). What containerd
        changes in place, its bolt databases, is copied; the rest it writes once and never changes (content blobs,
        unpacked layers: a container's writes go to a snapshot of its own), so the nodes share those files on disk
        as nodes made from one disk image share their image layers."""
        self._kill_containers(source)
        for node in (source, *nodes):
            self._terminate(node.proc("containerd"))
        for node in nodes:
            root = node.containerd_root
            fresh, old = root.with_name(root.name + ".copy"), root.with_name(root.name + ".old")
            for leftover in (fresh, old):
                shutil.rmtree(leftover, ignore_errors=True)
            sh("cp", "-a", "--link", source.containerd_root, fresh)
            for db in fresh.glob("*/*.db"):
                db.unlink()
                shutil.copy2(source.containerd_root / db.relative_to(fresh), db)
            (fresh / "io.containerd.grpc.v1.introspection" / "uuid").unlink(missing_ok=True)  # each its own
            if root.exists():
                root.rename(old)
            fresh.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        for node in (source, *nodes):
            self._start_containerd(node)

    def _import(self, ref: str, node: Node) -> None:
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
        assert save.stdout is not None
        imp = self.ctr("images", "import", "-", node=node, check=False, stdin=save.stdout, timeout=1800)
        save.stdout.close()  # a ctr that failed early leaves docker save a closed pipe, so it exits too
        failed = [] if save.wait() == 0 else [f"docker save {ref} exited with {save.returncode}"]
        if imp.returncode != 0:
            failed.append(f"{node.name}'s containerd: {imp.stderr.decode()[-2000:]}")
        if failed:
            raise RuntimeError(f"loading {ref} failed: " + "; ".join(failed))

    def _discard_layers(self, node: Node, ref: str) -> None:
        """The layer tarballs an import leaves in the content store, once unpacked into snapshots: containers start
        from the snapshots, so each node keeps one copy of an image instead of two (what the CRI's
        ``discard_unpacked_layers`` does for pulled images; ctr 1.6's import has no such flag)."""
        listed = self.ctr("images", "ls", node=node).stdout.decode().splitlines()
        digests = [line.split()[2] for line in listed if line.split()[:1] == [ref]]
        layers: list[str] = []
        while digests:
            blob = json.loads(self.ctr("content", "get", digests.pop(), node=node).stdout)
            digests += [m["digest"] for m in blob.get("manifests", [])]
            layers += [layer["digest"] for layer in blob.get("layers", [])]
        if layers:
            self.ctr("content", "rm", *layers, node=node, check=False)

    def _kubelet_credentials(self, node: Node) -> Path:
        assert self.cp is not None
        crt, key = PKI(self.cp.pki_dir).make_cert(f"kubelet-client-{node.name}", f"system:node:{node.name}",
                                                  ["system:nodes"], client=True)  # fmt: skip
        return write_kubeconfig(self.workdir / f"kubelet-{node.name}.conf", self.cp.server, self.cp.ca_crt, crt, key,
                                f"system:node:{node.name}")  # fmt: skip

    def _cluster_roles(self) -> None:
        """The API server's kubelet client (logs, exec) may use the kubelet API; kube-proxy gets its usual role."""
        assert self.cp is not None
        crt, key = PKI(self.cp.pki_dir).make_cert("kube-proxy", "system:kube-proxy", client=True)
        self.proxy_kubeconfig = write_kubeconfig(self.workdir / "kube-proxy.conf", self.cp.server, self.cp.ca_crt,
                                                 crt, key, "system:kube-proxy")  # fmt: skip
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

    def _start_kubelets(self) -> None:
        """One node at a time. Every kubelet serves device-plugin registration on one fixed path,
        /var/lib/kubelet/device-plugins/kubelet.sock (not under --root-dir), and empties that directory just before
        it binds: two kubelets starting together race there, and the loser fails with "bind: address already in
        use". Started in turn, the later kubelet replaces the earlier one's socket file, which no device plugin on
        these nodes uses."""
        self._cluster_roles()
        for node in self.nodes:
            self._start_kubelet(node)
            self._wait_ready(node)

    def _kubelet_config(self, node: Node) -> dict[str, Any]:
        assert self.cp is not None
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This kernel offers cgroup v1 only; kubelet (since 1.35) refuses it unless told so.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": node.cgroup_root,
            "podLogsDir": str(node.pod_logs_dir),
            "containerRuntimeEndpoint": f"unix://{node.containerd_sock}",
            "address": node.ip,
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
            "registerWithTaints": list(node.taints),
            "logging": {"format": "text"},
        }  # fmt: skip

    def _start_kubelet(self, node: Node) -> None:
        kubeconfig = self._kubelet_credentials(node)
        node.kubelet_root.mkdir(parents=True, exist_ok=True)
        make_cgroup_root(node.cgroup_root)
        path = self.workdir / f"kubelet-config-{node.name}.yaml"
        path.write_text(yaml.safe_dump(self._kubelet_config(node), sort_keys=False))
        labels = ",".join(f"{k}={v}" for k, v in {"rljob.dev/e2e": "true", **node.labels}.items())
        self._spawn(node.proc("kubelet"), [
            *node.run_in(),
            self.bin / "kubelet",
            f"--config={path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={node.kubelet_root}",
            f"--hostname-override={node.name}",
            f"--node-ip={node.ip}",
            f"--node-labels={labels}",
            "--v=1",
        ])  # fmt: skip

    def _wait_ready(self, node: Node) -> None:
        def ready() -> bool:
            self._alive(node.proc("kubelet"))
            got = self.kubectl("get", "node", node.name, "-o", "json", check=False)
            if got.returncode != 0:
                return False
            conditions = {c["type"]: c["status"] for c in json.loads(got.stdout)["status"].get("conditions", [])}
            return conditions.get("Ready") == "True"

        wait_for(ready, 180, 1.0, f"node {node.name} Ready")
        if node.extended_resources:
            patch = [{"op": "add", "path": f"/status/capacity/{k.replace('/', '~1')}", "value": v}
                     for k, v in node.extended_resources.items()]  # fmt: skip
            self.kubectl("patch", "node", node.name, "--subresource=status", "--type=json", "-p", json.dumps(patch))

            def advertised() -> bool:
                allocatable = json.loads(self.kubectl("get", "node", node.name, "-o", "json").stdout)["status"]["allocatable"]
                return all(allocatable.get(k) == v for k, v in node.extended_resources.items())

            wait_for(advertised, 60, 0.5, f"{node.name} allocatable {node.extended_resources}")

    def _start_kube_proxy(self, node: Node) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.proxy_kubeconfig)},
            "clusterCIDR": CLUSTER_CIDR,
            "hostnameOverride": node.name,
            "bindAddress": node.ip,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Inside a network namespace nf_conntrack_max is the host's: leave it alone.
            "conntrack": {"maxPerCore": 0, "min": 0},
        }
        path = self.workdir / f"kube-proxy-config-{node.name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        name = node.proc("kube-proxy")
        self._spawn(name, [*node.run_in(), self.bin / "kube-proxy", f"--config={path}", "--v=1"])

        def synced() -> bool:
            self._alive(name)
            rules = sh(*node.run_in(), "iptables-save", "-t", "nat", check=False).stdout
            return "KUBE-SVC-" in rules and "default/kubernetes:https" in rules

        wait_for(synced, 60, 0.5, f"{name}'s rules for the kubernetes Service")

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
        for node in self.nodes:
            self._spawn(node.proc("kube-router"), [
                *node.run_in(),
                self.bin / "kube-router",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={node.name}",
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
        for node in self.nodes:
            name = node.proc("kube-router")

            def synced(node: Node = node, name: str = name) -> bool:
                self._alive(name)
                rules = sh(*node.run_in(), "iptables-save", "-t", "filter", check=False).stdout
                return "-j KUBE-ROUTER-FORWARD" in rules and KUBE_ROUTER_SYNCED in rules

            wait_for(synced, 90, 0.5, f"{name}'s first network policy sync")

    def _start_dns(self) -> None:
        manifest = (Path(__file__).resolve().parent / "manifests" / "coredns.yaml").read_text()
        self.kubectl("apply", "-f", "-", input=manifest.replace("__IMAGE__", COREDNS_IMAGE).replace("__DNS_IP__", CLUSTER_DNS))
        self.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s", timeout=200)

    # ---- stop ----

    def stop(self) -> None:
        """Delete every pod (the kubelets tear them down), stop the processes, remove leftovers. Idempotent."""
        kubelets = [n for n in self.nodes if (p := self.procs.get(n.proc("kubelet"))) and p.poll() is None]
        if self.cp is not None and kubelets:
            with contextlib.suppress(Exception):
                # Controllers first (they would recreate the pods), then every pod: kubelet tears them down properly.
                self.kubectl("delete", "deployments,statefulsets,daemonsets,replicasets,jobs", "--all", "-A",
                             "--wait=false", check=False, timeout=30)  # fmt: skip
                self.kubectl("delete", "pods", "--all", "-A", "--wait=false", "--grace-period=3", check=False, timeout=30)
                wait_for(lambda: not any(self.ctr("tasks", "ls", "-q", node=n, timeout=10).stdout.strip() for n in kubelets),
                         40, 1.0, "containers gone")  # fmt: skip
        for node in self.nodes:
            for name in ("kube-router", "kube-proxy", "kubelet"):
                self._terminate(node.proc(name))
        for node in self.nodes:
            self._kill_containers(node)
            self._terminate(node.proc("containerd"))
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

    def _kill_containers(self, node: Node) -> None:
        if not node.containerd_sock.exists():
            return

        def ctr(*args: str) -> list[str]:
            return self.ctr(*args, node=node, check=False, timeout=30).stdout.decode().split()

        with contextlib.suppress(Exception):
            for task in ctr("tasks", "ls", "-q"):
                ctr("tasks", "kill", "-s", "SIGKILL", "--all", task)
            time.sleep(1)
            for task in ctr("tasks", "ls", "-q"):
                ctr("tasks", "delete", "-f", task)
            for container in ctr("containers", "ls", "-q"):
                ctr("containers", "delete", container)

    def _cleanup_leftovers(self) -> None:
        """What a killed run can leave: shims of our containerds, processes in the kubelets' cgroups, mounts under
        our state directories, pod network namespaces, CNI IP reservations."""
        socks = [str(n.containerd_sock).encode() for n in self.nodes]
        for proc in glob.glob("/proc/[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                argv = Path(proc).read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and set(socks) & set(argv):
                    os.kill(int(proc.split("/")[2]), signal.SIGKILL)
        pod_cgroups = [f"/sys/fs/cgroup/*{n.cgroup_root.rstrip('/')}/kubepods" for n in self.nodes]
        for root in pod_cgroups:
            for procs in glob.glob(f"{root}/**/cgroup.procs", recursive=True):
                with contextlib.suppress(OSError):
                    for pid in Path(procs).read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        prefixes = (str(STATE_DIR), str(RUN_DIR), *(str(n.containerd_root) for n in self.nodes))
        for m in sorted((m for m in mounts if m.startswith(prefixes)), key=len, reverse=True):
            sh("umount", "-l", m, check=False)
        for n in self.nodes:
            for d in (n.state_dir / "kubelet", n.state_dir / "cni-ipam", n.run_dir / "containerd-state",
                      *([n.pod_logs_dir] if n.suffix else [])):  # fmt: skip
                shutil.rmtree(d, ignore_errors=True)
        # Pod network namespaces containerd created (cni-<uuid>); the veths die with them.
        for ns in glob.glob("/run/netns/cni-*"):
            sh("umount", ns, check=False)
            with contextlib.suppress(OSError):
                os.unlink(ns)
        for root in pod_cgroups:
            for cg in sorted(glob.glob(f"{root}/**/", recursive=True), key=len, reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(cg)


def make_cgroup_root(root: str) -> None:
    """A kubelet's --cgroup-root must exist in every hierarchy (cgroup v1); cpuset's new group starts with no CPUs
    and no memory nodes, so it gets its parent's."""
    if root == "/":
        return
    for hierarchy in glob.glob("/sys/fs/cgroup/*/"):
        path = Path(hierarchy) / root.strip("/")
        with contextlib.suppress(OSError):
            path.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (path / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((Path(hierarchy) / name).read_text())


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
    """The namespaces, and with them the link between them."""
    for node in NODES:
        if netns_path(node.netns).exists():
            sh("ip", "netns", "delete", node.netns, check=False)


def down() -> None:
    """What a killed run left behind: containers, mounts, processes, the namespaces."""
    leftover = Cluster(Path(tempfile.gettempdir()) / "rljob-e2e-down")
    for node in leftover.nodes:
        leftover._kill_containers(node)
    leftover._cleanup_leftovers()
    delete_netns()


def serving(sock: Path) -> bool:
    """Whether something accepts connections on this unix socket (a stale file left by a killed run does not)."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def preload(images: Sequence[str]) -> dict[str, float] | None:
    """The images into every node's containerd, then the containerds stopped: no control plane, no kubelet, no
    binary of ours. `make test` runs this while the control plane builds and the unit and integration tests run, so
    the cluster that starts after them finds this build of each image imported (the marks
    :meth:`Cluster.load_images` keeps) and skips its longest step. None when a node's containerd is already serving
    (a running cluster: it loads its images itself)."""
    ensure_netns()
    c = Cluster(Path(tempfile.mkdtemp(prefix="rljob-e2e-preload-")), images)
    if any(serving(n.containerd_sock) for n in c.nodes):
        return None
    t0 = time.monotonic()
    try:
        c._phase("cleanup", c._cleanup_leftovers)
        c._phase("containerd", c._each_node(c._start_containerd))
        c._phase("images", lambda: c.load_images(c.images))
    finally:
        c.stop()
        shutil.rmtree(c.workdir, ignore_errors=True)
    c.timings["total"] = round(time.monotonic() - t0, 1)
    return c.timings


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
    parser.add_argument("--preload", action="store_true",
                        help="only import the images into both nodes' containerd, then stop (make e2e-prepare)")
    parser.add_argument("images", nargs="*")
    args = parser.parse_args(argv)
    problems = missing_prerequisites(binaries=not args.preload)
    if problems:
        print("e2e-cluster: cannot start:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.preload:
        timings = preload(args.images)
        print("e2e-cluster: a cluster is running; it loaded its images when it started" if timings is None
              else f"e2e-cluster: images in both nodes in {timings['total']:.0f}s: {timings}", flush=True)  # fmt: skip
        return 0
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
