"""End to end on a real node: a finished job's checkpoint fetched off its claim, then played here.

The chain a user follows after training in the cluster: the job ends Succeeded, its driver having
played the evaluation's games (figures onto the checkpoint volume and into the job's status, a film of
one more game); `rljob fetch` copies the final checkpoint (and the evaluation's files) through a reader
pod; `rljob play` plays the fetched policy on this machine. What arrives is checked byte for byte against the files
on the volume (the node's hostPath behind the claim), from a finished job and from one still training.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.cluster.controlplane import KubectlError, wait_for
from tests.e2e import cluster as e2e
from tests.e2e.jobs import TARGET, apply, job, job_manifest, wait_job


def rljob(cluster: e2e.Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    code = "import sys; from rljob.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)


def volume_dir(cluster: e2e.Cluster, ns: str, claim: str) -> Path:
    """The node's directory behind a claim (the static hostPath volumes of the checkpoint_volumes fixture)."""
    pv = cluster.kubectl("get", "pvc", claim, "-n", ns, "-o", "jsonpath={.spec.volumeName}").stdout.strip()
    assert pv, f"claim {claim} is not bound"
    return Path(cluster.kubectl("get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}").stdout.strip())


def checksums(root: Path) -> dict[str, str]:
    files = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
    assert "rljob.json" in files, (root, sorted(files))
    return files


def test_fetch_a_finished_jobs_checkpoint_and_play_it(
    cluster: e2e.Cluster, namespace: str, checkpoint_volumes: None, tmp_path: Path
) -> None:
    ns, name = namespace, "fetched"
    apply(cluster, ns, job_manifest(name, workers=1, iterations=2, checkpoint={"size": "1Gi", "everyIterations": 1}))
    wait_job(cluster, ns, name, lambda j: j.get("status", {}).get("phase") == "Succeeded" and j, 900, "phase Succeeded")

    out = tmp_path / "fetched"
    fetched = rljob(cluster, "fetch", name, "-n", ns, "--dest", str(out))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert (out / "iteration-000002" / "rljob.json").is_file(), sorted(p.name for p in out.iterdir())
    assert f"{name}: iteration-000002 -> {out / 'iteration-000002'}" in fetched.stdout
    if not TARGET.external:  # the node's own directory behind the claim
        volume = volume_dir(cluster, ns, f"{name}-checkpoints")
        assert checksums(out / "iteration-000002") == checksums(volume / "iteration-000002")
    # The driver's end-of-training evaluation came along: its film and its figures, which are in the status too.
    assert (out / "evaluation.gif").is_file(), fetched.stdout + fetched.stderr + str(sorted(p.name for p in out.iterdir()))
    with Image.open(out / "evaluation.gif") as gif:
        assert gif.n_frames > 1
    card = json.loads((out / "evaluation.json").read_text())
    assert card["games"] == len(card["returns"]) == 20 and card["iteration"] == 2 and card["cut_off"] == 20
    evaluation = wait_job(cluster, ns, name, lambda j: j["status"].get("progress", {}).get("evaluation"), 120,
                          "status.progress.evaluation")
    assert evaluation == {"games": 20, "meanReturn": card["mean_return"], "stdReturn": card["std_return"],
                          "minReturn": card["min_return"], "maxReturn": card["max_return"], "wins": card["wins"],
                          "losses": card["losses"], "cutOff": 20, "seed": 0, "iteration": 2}
    # The reader pod is gone once the copy is done.
    wait_for(lambda: not cluster.kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/component=checkpoint-reader",
                                         "-o", "name").stdout.strip(),
             60, 2.0, "the reader pod deleted", ignore=(KubectlError,))  # fmt: skip

    again = rljob(cluster, "fetch", name, "-n", ns, "--dest", str(out), "--checkpoint", "1")
    assert again.returncode == 0 and (out / "iteration-000001" / "rljob.json").is_file(), again.stdout + again.stderr

    played = rljob(cluster, "play", str(out), "--episodes", "1", "--max-steps", "50", "--no-gif")
    assert played.returncode == 0, played.stdout + played.stderr
    assert "(iteration 2)" in played.stdout and "mean return" in played.stdout, played.stdout
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")


@pytest.mark.local_node
def test_fetch_from_a_running_job_copies_its_latest_checkpoint_byte_for_byte(
    cluster: e2e.Cluster, namespace: str, checkpoint_volumes: None, tmp_path: Path
) -> None:
    ns, name = namespace, "fetch-running"
    # A checkpoint every iteration, all kept: the one fetched is still on the volume to compare with afterwards.
    apply(cluster, ns, job_manifest(name, workers=0, iterations=None,
                                    checkpoint={"size": "1Gi", "everyIterations": 1, "keep": 1000}))
    wait_job(cluster, ns, name, lambda j: j.get("status", {}).get("phase") == "Running"
             and (j["status"].get("progress") or {}).get("lastCheckpoint"), 900, "a checkpoint while Running")

    out = tmp_path / "fetched"
    fetched = rljob(cluster, "fetch", name, "-n", ns, "--dest", str(out))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert job(cluster, ns, name)["status"]["phase"] == "Running"  # still training while its files were read
    copied = [p for p in out.iterdir() if p.name.startswith("iteration-")]
    assert len(copied) == 1, sorted(p.name for p in out.iterdir())
    assert checksums(copied[0]) == checksums(volume_dir(cluster, ns, f"{name}-checkpoints") / copied[0].name)
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")
