"""`rljob logs --attempt N` and `rljob logs --ray` against the real API server and a live operator: the head pods of
each attempt found by their labels, the tail the operator keeps per attempt as the fallback, the list of attempts
that have a log, and the per-pod summary of --ray (kwok's nodes serve no logs and no exec, so every pod reports why
its copy failed, in one line each, and the exit code says so)."""
from __future__ import annotations

import json
from pathlib import Path

from rljob.api import constants as c
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_process import OperatorProcess
from tests.integration.jobs import rljob, run_to, wait_phase


def test_logs_of_an_earlier_attempt_and_of_ray(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str,
                                               tmp_path: Path) -> None:
    cp = control_plane
    ns = ("-n", namespace)
    run_to(cp, namespace, small_job("lg", namespace, backoffLimit=1, workers={"replicas": 2, "cpu": "1", "memory": "2Gi"}))
    cp.set_pod_phase(namespace, "lg-head-1", "Failed", exit_code=1)
    wait_phase(cp, namespace, "lg", "Running", 60, attempts=2)
    # What the operator keeps when a head's log can be read (kwok's cannot): the tail per attempt.
    cp.kubectl("patch", "rltj", "lg", *ns, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"attemptLogs": [{"attempt": 1, "logTail": "iteration 7\nboom\n"}]}}))

    first = rljob(cp, "logs", "lg", *ns, "--attempt", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "iteration 7\nboom\n" and "kept by the operator" in first.stderr

    beyond = rljob(cp, "logs", "lg", *ns, "--attempt", "5")
    assert beyond.returncode == 1 and len(beyond.stderr.splitlines()) == 1
    assert beyond.stderr.strip() == ("rljob: rltrainingjob lg has no attempt 5 (it has had 2); driver logs of attempts: "
                                     "1 (pod lg-head-1), 2 (pod lg-head-2)")

    dest = tmp_path / "ray-logs"
    ray = rljob(cp, "logs", "lg", *ns, "--ray", "--dest", str(dest))
    assert ray.returncode == 1 and ray.stdout == "" and "Traceback" not in ray.stderr
    lines = {line.split(": ", 1)[0]: line for line in ray.stderr.splitlines()}
    # Every Ray pod of the job (the failed attempt's head too; not the job's other children), one line each.
    assert sorted(lines) == ["lg-head-1", "lg-head-2", "lg-workers-0", "lg-workers-1"], ray.stderr
    assert "not running: Ray's logs went with its container" in lines["lg-head-1"]
    assert "copy from pod" not in lines["lg-head-1"]  # no exec into a finished pod
    for pod, container in (("lg-head-2", c.CONTAINER_NAME_HEAD), ("lg-workers-0", c.CONTAINER_NAME_WORKER)):
        assert f"failed: log of {pod}: " in lines[pod] and f"failed: copy from pod {pod}: " in lines[pod]
        assert f'no exec found for container "{container}"' in lines[pod]  # kwok's words: the exec reached the node
    assert not dest.exists()  # nothing could be copied: no empty folders either
