"""Invalid RLTrainingJob manifests: each is refused by the API server (the generated CRD) and by the model.

One table for both, so the CRD and the pydantic models cannot drift apart: a manifest the API server
accepts but the model refuses would be admitted and then fail in the operator.
Each case: the dotted path changed in a minimal valid job, the value (DELETE removes the key), and a
fragment the error must contain (the field path, or the rule's message).
"""
from __future__ import annotations

import copy
from typing import Any

from tests.builders import DELETE, minimal_job

CASES: list[tuple[str, Any, str]] = [
    ("spec.entrypoint", DELETE, "entrypoint"),
    ("spec.entrypoint", {"recipe": "pong", "script": "x.py"}, "exactly one of recipe or script"),
    ("spec.entrypoint", {"args": ["a"]}, "exactly one of recipe or script"),
    ("spec.entrypoint.recipe", "breakout", "spec.entrypoint.recipe"),
    ("spec.entrypoint.recipe", 7, "spec.entrypoint.recipe"),
    ("spec.entrypoint.args", "not-a-list", "spec.entrypoint.args"),
    ("spec.head.gpus", -1, "spec.head.gpus"),
    ("spec.head.gpus", 1000, "spec.head.gpus"),
    ("spec.head.gpus", "two", "spec.head.gpus"),
    ("spec.head.cpu", "lots", "spec.head.cpu"),
    ("spec.head.cpu", "0", "spec.head.cpu"),
    ("spec.head.cpu", -1, "spec.head.cpu"),
    ("spec.head.memory", "8GB", "spec.head.memory"),
    ("spec.head.memory", "-1Gi", "spec.head.memory"),
    ("spec.head.shmSize", "64Gi", "shmSize must be less than memory"),
    ("spec.workers.cpu", "-3", "spec.workers.cpu"),
    ("spec.workers.shmSize", "0", "spec.workers.shmSize"),
    ("spec.workers.replicas", -1, "spec.workers.replicas"),
    ("spec.workers.replicas", 100000, "spec.workers.replicas"),
    ("spec.workers.tolerations", [{"operator": "Maybe"}], "spec.workers.tolerations[0].operator"),
    ("spec.workers.tolerations", [{"key": "gpu", "operator": "Exists", "value": "yes"}], "spec.workers.tolerations[0].value"),
    ("spec.workers.tolerations", [{"value": "yes"}], "spec.workers.tolerations[0].operator"),
    ("spec.workers.tolerations", [{"key": "gpu", "value": "a b"}], "spec.workers.tolerations[0].value"),
    ("spec.workers.tolerations", [{"key": "no spaces", "operator": "Exists"}], "spec.workers.tolerations[0].key"),
    ("spec.head.tolerations", [{"key": "gpu", "operator": "Exists", "tolerationSeconds": 5}], "spec.head.tolerations[0].tolerationSeconds"),
    ("spec.head.nodeSelector", {"pool": "not a label value"}, "spec.head.nodeSelector.pool"),
    ("spec.workers.nodeSelector", {"bad key": "x"}, "spec.workers.nodeSelector"),
    ("spec.clusterCoordinationTimeoutSeconds", 0, "spec.clusterCoordinationTimeoutSeconds"),
    ("spec.clusterCoordinationTimeoutSeconds", -30, "spec.clusterCoordinationTimeoutSeconds"),
    ("spec.maxRunDurationSeconds", 0, "spec.maxRunDurationSeconds"),
    ("spec.maxRunDurationSeconds", "1h", "spec.maxRunDurationSeconds"),
    ("spec.backoffLimit", -1, "spec.backoffLimit"),
    ("spec.ttlSecondsAfterFinished", -5, "spec.ttlSecondsAfterFinished"),
    ("spec.suspend", "yes", "spec.suspend"),
    ("spec.experiment", "spaces are bad", "spec.experiment"),
    ("spec.image", "my image:latest", "spec.image"),
    ("spec.image", "rljob/runtime:bad tag", "spec.image"),
    ("spec.imagePullPolicy", "Sometimes", "spec.imagePullPolicy"),
    ("spec.imagePullSecrets", [{"name": "Not_A_DNS_Name"}], "spec.imagePullSecrets[0].name"),
    ("spec.network.egress", [{"cidr": "10.0.0.0/33"}], "spec.network.egress[0].cidr"),
    ("spec.network.egress", [{"cidr": "not-a-cidr"}], "spec.network.egress[0].cidr"),
    ("spec.network.egress", [{"cidr": "10.0.0.1/8"}], "spec.network.egress[0].cidr"),
    ("spec.network.egress", [{"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}], "spec.network.egress[0].except"),
    ("spec.network.egress", [{"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}], "spec.network.egress[0].except"),
    ("spec.network.egress", [{"cidr": "10.0.0.0/8", "ports": [{"port": 0}]}], "spec.network.egress[0].ports[0].port"),
    ("spec.pipPackages", ["numpy"], "spec.pipPackages"),
    ("spec", {"entrypoint": {"recipe": "pong"}, "pipPackages": ["--index-url=https://mirror.example/simple", "numpy"],
              "network": {"allowInternetEgress": True}}, "spec.pipPackages"),
    ("spec", {"entrypoint": {"recipe": "pong"}, "pipPackages": ["numpy\n--extra-index-url=https://x"],
              "network": {"allowInternetEgress": True}}, "spec.pipPackages"),
    ("spec.stop", {"iterations": "many"}, "spec.stop.iterations"),
    ("spec.checkpoint", {"claimName": "a", "size": "1Gi"}, "claimName"),
    ("spec.checkpoint", {"size": "0"}, "spec.checkpoint.size"),
    ("spec.checkpoint", {"claimName": "Bad_Claim"}, "spec.checkpoint.claimName"),
    ("spec.checkpoint", {"size": "1Gi", "storageClassName": "fast ssd"}, "spec.checkpoint.storageClassName"),
    ("spec.checkpoint", {"everyIterations": 0}, "spec.checkpoint.everyIterations"),
    ("spec", {"entrypoint": {"script": "train.py"}, "source": {"configMap": {"name": "My_Code"}}},
     "spec.source.configMap.name"),
    ("spec.env", [{"name": "RLJOB_SPEC", "value": "x"}], "spec.env[0].name"),
    ("spec.env", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}], "spec.env[0].name"),
    ("spec.bogus", 1, "bogus"),
    ("spec.head.bogus", 1, "bogus"),
    ("metadata.name", "a" * 41, "metadata.name"),
    ("metadata.name", "9lives", "metadata.name"),
]



def variant(path: str, value: Any, name: str = "bad") -> dict[str, Any]:
    """A minimal valid job with `path` set to `value` (or removed)."""
    body = minimal_job(name)
    node = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = copy.deepcopy(value)
    return body
