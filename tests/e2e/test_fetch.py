"""End to end on a real node: a finished job's checkpoint fetched off its claim, then played here.

The chain a user follows after training in the cluster: the job ends Succeeded, its driver having
played the evaluation's games (figures onto the checkpoint volume and into the job's status, a film of
one more game); `rljob fetch` copies the final checkpoint (and the evaluation's files) through a reader
pod; `rljob play` plays the fetched policy on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.cluster.controlplane import KubectlError, wait_for
from tests.e2e import cluster as e2e
from tests.e2e.test_pong import apply, job_manifest, namespace, wait_job  # noqa: F401  (namespace is a fixture)


def rljob(cluster: e2e.Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    code = "import sys; from rljob.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_fetch_a_finished_jobs_checkpoint_and_play_it(
    cluster: e2e.Cluster, namespace: str, checkpoint_volumes: None, tmp_path: Path  # noqa: F811
) -> None:
    ns, name = namespace, "fetched"
    apply(cluster, ns, job_manifest(name, workers=1, iterations=2, checkpoint={"size": "1Gi", "everyIterations": 1}))
    wait_job(cluster, ns, name, lambda j: j.get("status", {}).get("phase") == "Succeeded" and j, 900, "phase Succeeded")

    out = tmp_path / "fetched"
    fetched = rljob(cluster, "fetch", name, "-n", ns, "-o", str(out))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert (out / "iteration-000002" / "rljob.json").is_file(), sorted(p.name for p in out.iterdir())
    assert f"{name}: iteration-000002 -> {out / 'iteration-000002'}" in fetched.stdout
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

    again = rljob(cluster, "fetch", name, "-n", ns, "-o", str(out), "--checkpoint", "1")
    assert again.returncode == 0 and (out / "iteration-000001" / "rljob.json").is_file(), again.stdout + again.stderr

    played = rljob(cluster, "play", str(out), "--episodes", "1", "--max-steps", "50", "--no-gif")
    assert played.returncode == 0, played.stdout + played.stderr
    assert "(iteration 2)" in played.stdout and "mean return" in played.stdout, played.stdout
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")
