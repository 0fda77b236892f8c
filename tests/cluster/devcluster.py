"""`make dev-cluster` (``python -m tests.cluster`` from the repository's root): the test suite's control plane
plus the operator, in the foreground.

A person can then `kubectl apply -f examples/pong.yaml` and watch `kubectl get rltj -w`; pods become
Running on kwok's fake nodes (no containers run), and `kubectl patch` or the harness can finish them. A default
StorageClass (the controller manager's host-path provisioner, for development only) gives a job's checkpoint claim a
volume, as a real cluster's default class would; without one, examples/pong.yaml would wait on its claim.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rljob.api import constants as c
from rljob.api.crd import crd_yaml

from .controlplane import ControlPlaneError, format_timings, start_control_plane
from .operator_process import OPERATOR_NAMESPACE, OperatorProcess

DEFAULT_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
}


def _follow(path: Path, stop: threading.Event) -> None:
    """Shows the operator's log as it grows, so the terminal reads like `rljob operator`."""
    while not path.exists() and not stop.is_set():
        time.sleep(0.2)
    with open(path, encoding="utf-8", errors="replace") as f:
        while not stop.is_set():
            line = f.readline()
            if line:
                sys.stdout.write("operator | " + line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev-cluster", description=__doc__)
    parser.add_argument("--dir", default=".cache/dev-cluster", help="kubeconfig, state and logs (default %(default)s)")
    parser.add_argument("--cpu-nodes", type=int, default=3)
    parser.add_argument("--gpu-nodes", type=int, default=1)
    args = parser.parse_args(argv)
    base = Path(args.dir).resolve()
    kubeconfig = base / "kubeconfig"
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        cp = start_control_plane(base / "state", kubeconfig_out=kubeconfig, cpu_nodes=args.cpu_nodes, gpu_nodes=args.gpu_nodes,
                                 controller_manager_args=("--enable-hostpath-provisioner",))
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    operator = None
    try:
        print(format_timings(cp), flush=True)
        cp.apply(DEFAULT_STORAGE_CLASS)
        cp.apply(crd_yaml())
        cp.wait_established(c.CRD_NAME)
        cp.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        log = base / "operator.log"
        log.unlink(missing_ok=True)
        threading.Thread(target=_follow, args=(log, stop), daemon=True).start()
        operator = OperatorProcess(kubeconfig, log).start()
        print(
            f"\nA control plane with {args.cpu_nodes} CPU node(s) and {args.gpu_nodes} GPU node(s) (kwok) and the operator "
            f"are running.\n\n  export KUBECONFIG={kubeconfig}\n  export PATH={cp.bin_dir}:$PATH   # kubectl, helm\n"
            f"  kubectl apply -f examples/pong.yaml\n  kubectl get rltj -w\n\n"
            f"Operator metrics: {operator.metrics_url}   component logs: {cp.logs_dir}\nCtrl-C stops everything.\n",
            flush=True,
        )
        while not stop.wait(1.0):
            cp.check_alive()
            if not operator.alive():
                print("the operator exited; see the log above", file=sys.stderr)
                return 1
        print("stopping ...", flush=True)
        return 0
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.set()
        if operator is not None:
            operator.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
