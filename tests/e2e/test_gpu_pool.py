"""End to end on real nodes: a head that asks for a GPU goes to the node that advertises `nvidia.com/gpu` (the local
cluster's GPU pool node; its device is only advertised), and there, with no CUDA device to be seen, fails at once as
a configuration error that says so, instead of starting Ray with a GPU it does not have.
"""

from __future__ import annotations

import pytest

from tests.e2e import cluster as e2e
from tests.e2e.jobs import GPU_POOL, apply, get_json, gpu_pool_nodes, job_manifest, node_of, wait_job


@pytest.mark.local_node  # on a user's cluster the GPU would be real, and the job would run
def test_a_gpu_head_is_scheduled_by_the_extended_resource_and_fails_clearly_without_cuda(
        cluster: e2e.Cluster, namespace: str) -> None:
    ns, name = namespace, "gpu"
    pool = gpu_pool_nodes(cluster)
    body = job_manifest(name, workers=0, iterations=1, backoffLimit=2)
    # Only the pool's taint is tolerated: no selector, so the GPU request alone picks the node.
    body["spec"]["head"] = {**body["spec"]["head"], "gpus": 1, "tolerations": GPU_POOL["tolerations"]}
    apply(cluster, ns, body)
    job = wait_job(cluster, ns, name, lambda j: j.get("status", {}).get("phase") == "Failed" and j, 420, "phase Failed")
    head = f"{name}-head-1"
    assert node_of(cluster, ns, head) in pool
    assert job["status"]["attempts"] == 1 and "a configuration error, not retried" in job["status"]["message"], job["status"]
    (state,) = [cs["state"] for cs in get_json(cluster, "pod", head, "-n", ns)["status"]["containerStatuses"]]
    message = state["terminated"].get("message", "")
    assert "spec.head.gpus asks for 1 GPU(s), but this pod sees 0 CUDA device(s)" in message, state
