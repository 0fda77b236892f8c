"""The checkpoint reader pod `rljob fetch` starts: which claim, owned by the job, restricted, not the operator's."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from rljob.api import constants as c
from rljob.resources import fetch
from tests.builders import parsed_job


def test_mounts_the_jobs_own_claim_read_only_where_the_head_did() -> None:
    pod = fetch.reader_pod(parsed_job(checkpoint={"size": "5Gi"}), "img:1", name="demo-fetch-abcde")
    spec = pod["spec"]
    assert spec["volumes"] == [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": "demo-checkpoints", "readOnly": True}}]
    (container,) = spec["containers"]
    assert container["volumeMounts"] == [{"name": "checkpoints", "mountPath": c.CHECKPOINT_MOUNT, "readOnly": True}]
    assert container["image"] == "img:1"
    assert container["command"] == ["sleep", str(fetch.DEFAULT_LIFETIME_S)]
    # It ends by itself shortly after the sleep, should the command that started it never delete it.
    assert spec["activeDeadlineSeconds"] > fetch.DEFAULT_LIFETIME_S
    assert spec["restartPolicy"] == "Never"
    assert pod["metadata"]["name"] == "demo-fetch-abcde" and pod["metadata"]["namespace"] == "ns1"


def test_an_existing_claim_is_mounted_by_its_name() -> None:
    pod = fetch.reader_pod(parsed_job(checkpoint={"claimName": "shared-ckpts"}), "img:1")
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "shared-ckpts"
    assert fetch.checkpoint_claim_name(parsed_job(checkpoint={"claimName": "shared-ckpts"})) == "shared-ckpts"


@pytest.mark.parametrize("spec", [{}, {"checkpoint": {"everySeconds": 60}}])
def test_a_job_without_a_claim_has_nothing_to_mount(spec: dict[str, Any]) -> None:
    j = parsed_job(**spec)
    assert fetch.checkpoint_claim_name(j) is None
    with pytest.raises(ValueError, match="emptyDir"):
        fetch.reader_pod(j, "img:1")


def test_owned_by_the_job_but_not_the_operators() -> None:
    pod = fetch.reader_pod(parsed_job(checkpoint={"size": "1Gi"}), "img:1")
    meta = pod["metadata"]
    # Deleting the job deletes the pod; the job's controller (the operator) does not manage it.
    assert meta["ownerReferences"] == [{
        "apiVersion": c.API_VERSION, "kind": c.KIND, "name": "demo", "uid": "u1",
        "controller": False, "blockOwnerDeletion": False,
    }]
    # The operator indexes pods by its managed-by label: this one must never look like a head or a worker.
    assert meta["labels"][c.LABEL_APP_MANAGED_BY] != c.MANAGED_BY
    assert c.LABEL_ROLE not in meta["labels"]
    # The job label puts it under the job's NetworkPolicies (default deny).
    assert meta["labels"][c.LABEL_JOB] == "demo"
    with pytest.raises(ValueError, match="uid"):
        fetch.reader_pod(parsed_job(uid=None, checkpoint={"size": "1Gi"}), "img:1")


def test_meets_pod_security_restricted_and_needs_no_token() -> None:
    spec = fetch.reader_pod(parsed_job(checkpoint={"size": "1Gi"}), "img:1")["spec"]
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert psc["runAsUser"] == 1000 and psc["fsGroupChangePolicy"] == "OnRootMismatch"
    sc = spec["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False
    assert set(spec["containers"][0]["resources"]) == {"requests", "limits"}


def test_scheduled_like_the_head_or_pinned_to_a_running_heads_node() -> None:
    j = parsed_job(checkpoint={"size": "1Gi"}, head={"nodeSelector": {"pool": "gpu"},
                                            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            imagePullSecrets=[{"name": "regcred"}], imagePullPolicy="Always")
    spec = fetch.reader_pod(j, "img:1")["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert "nodeName" not in spec
    # A ReadWriteOnce volume attached to the running head's node is mountable there only.
    pinned = fetch.reader_pod(j, "img:1", node_name="node-7")["spec"]
    assert pinned["nodeName"] == "node-7" and "nodeSelector" not in pinned
    assert pinned["tolerations"] == spec["tolerations"]


def test_names_are_unique_valid_and_short() -> None:
    first, second = fetch.reader_pod_name("demo"), fetch.reader_pod_name("demo")
    assert first != second and first.startswith("demo-fetch-")
    long = fetch.reader_pod_name("j" * 63, suffix="abcde")
    assert len(long) <= 63 and long.endswith("-fetch-abcde")


def test_the_exec_status_gives_the_exit_code() -> None:
    from rljob.cli.fetch import _exit_code

    assert _exit_code(b'{"metadata":{},"status":"Success"}') == 0
    failure = (b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code",'
               b'"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}')
    assert _exit_code(failure) == 2
    assert _exit_code(b"") == -1 and _exit_code(b"not json") == -1  # no status at all is no success


def test_checkpoint_ids_and_refused_archives(tmp_path: Path) -> None:
    import io
    import tarfile

    from rljob.cli.cluster import CliError
    from rljob.cli.fetch import _extract, _wanted

    assert _wanted(None) is None and _wanted("12") == 12 and _wanted("iteration-000012") == 12
    with pytest.raises(CliError, match="iteration number"):
        _wanted("latest")
    # A tar whose entry climbs out of the output folder is refused, not unpacked beside it.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escaped")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw.seek(0)
    with pytest.raises(CliError, match="cannot unpack"):
        _extract(raw, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


class _FakeExec:
    """The exec websocket as the kubernetes client behaves: update() buffers what arrived (here one frame per call),
    read_channel() of a channel with nothing buffered updates first, read_all() empties every channel."""

    def __init__(self, frames: list[tuple[int, bytes]]) -> None:
        self.frames, self._channels, self.open = list(frames), {}, True
        self._all = io.BytesIO()

    def update(self, timeout: float = 0) -> None:
        if not self.open:
            return
        if not self.frames:
            self.open = False
            return
        channel, data = self.frames.pop(0)
        self._channels[channel] = self._channels.get(channel, b"") + data
        self._all.write(data)

    def read_channel(self, channel: int, timeout: float = 0) -> bytes:
        if channel not in self._channels:
            self.update(timeout)
        return self._channels.pop(channel, b"")

    def read_all(self) -> bytes:
        self._channels = {}
        return self._all.getvalue()

    def is_open(self) -> bool:
        return self.open

    def close(self) -> None:
        self.open = False


def test_exec_output_arrives_whole_however_it_is_framed() -> None:
    """Output that arrives while another channel is read is kept for the next round, not dropped: a tar stream
    missing a piece would end early without an error, leaving files out of the copy."""
    from types import SimpleNamespace

    from kubernetes.stream.ws_client import ERROR_CHANNEL, STDOUT_CHANNEL

    from rljob.cli.fetch import _exec_to

    chunks = [bytes([i]) * 1000 for i in range(20)]
    frames = [(STDOUT_CHANNEL, chunk) for chunk in chunks] + [(ERROR_CHANNEL, b'{"status":"Success"}')]
    fake = _FakeExec(frames)
    cluster = SimpleNamespace(core=lambda: SimpleNamespace(connect_get_namespaced_pod_exec=None), namespace="ns",
                              call=lambda what, fn, *a, **kw: fake)
    sink = io.BytesIO()
    _exec_to(cluster, "reader", "reader", ["tar", "-cf", "-", "x"], sink)  # type: ignore[arg-type]
    assert sink.getvalue() == b"".join(chunks)


@pytest.mark.parametrize(
    ("job_image", "reader"),
    [
        (c.DEFAULT_IMAGE, c.OPERATOR_IMAGE),
        ("registry.example.com:5000/team/rljob/runtime:0.3.1-cuda", "registry.example.com:5000/team/rljob/operator:0.3.1"),
        ("rljob/runtime:0.1.0-cpu", "rljob/operator:0.1.0"),  # a local build's name
        ("runtime:0.1.0-cpu", "operator:0.1.0"),
        ("team/pong-trainer:7", c.OPERATOR_IMAGE),  # an image of the user's own: this release's operator image
        ("ghcr.io/rljob/runtime@sha256:" + "0" * 64, c.OPERATOR_IMAGE),
        ("ghcr.io/rljob/runtime:latest", c.OPERATOR_IMAGE),
    ],
)
def test_the_reader_runs_the_small_operator_image_from_the_runtime_images_registry(job_image: str, reader: str) -> None:
    assert fetch.reader_image(job_image) == reader
