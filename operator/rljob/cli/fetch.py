"""`rljob fetch NAME`: copy a job's checkpoint from its checkpoint volume to this machine.

Works while the job runs and after it finished (its head pod gone): a short-lived reader pod mounts
the job's claim read-only (rljob.resources.fetch), `tar` streams the checkpoint out over exec, and
the pod is deleted. The result is a folder `rljob play` takes as it is:

    DIR/iteration-000123/     the checkpoint (RLlib's files and rljob.json)
    DIR/evaluation.gif        a film of one more game after the end-of-training evaluation, when the run wrote one
    DIR/evaluation.json       the evaluation's figures and every game's return
    DIR/progress.jsonl        the run's progress records, when present
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from ..api import ManifestError, parse_job
from ..api import constants as c
from .cluster import CliError, Cluster, add_cluster_flags, connect, get_job

EXTRAS = ("evaluation.gif", "evaluation.json", "progress.jsonl")  # written next to the checkpoints by the driver
_ITERATION = re.compile(r"^(?:iteration-)?(\d+)$")
# Complete checkpoints only: a folder without rljob.json is one a killed head left half-written.
_LIST = (
    f'cd {c.CHECKPOINT_MOUNT} && for d in iteration-*; do [ -f "$d/rljob.json" ] && echo "$d"; done; true'
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch",
        help="copy a job's checkpoint to this machine (also after the job finished)",
        description="Copies the latest (or a chosen) checkpoint of job NAME from its checkpoint volume "
        "(spec.checkpoint.size or claimName) into DIR (--dest), through a short-lived pod owned by the job that mounts "
        "the volume read-only. Then `rljob play DIR` plays it. Exit codes: 0 copied, 1 anything else.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--checkpoint", metavar="ID", help="iteration number or iteration-NNNNNN folder (default: the latest)")
    # Not -o: everywhere else in rljob (and kubectl) -o is an output format.
    p.add_argument("--dest", type=Path, metavar="DIR", help="where to write (default: ./NAME/)")
    p.add_argument("--image", help="image of the reader pod, any with sh, tar and sleep (default: the operator image "
                   "from the registry of the job's runtime image)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the reader pod to start (default 300)")
    add_cluster_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return fetch(connect(args), args)
    except CliError as exc:
        print(f"rljob fetch: error: {exc}", file=sys.stderr)
        return 1


def fetch(cluster: Cluster, args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    from ..resources.fetch import CONTAINER_NAME, checkpoint_claim_name, reader_image, reader_pod

    try:
        job = parse_job(get_job(cluster, args.name), f"{cluster.namespace}/{args.name}")
    except ManifestError as exc:
        raise CliError("; ".join(exc.lines())) from None
    if checkpoint_claim_name(job) is None:
        raise CliError(
            f"{args.name} has no checkpoint volume: its checkpoints were in the head pod's emptyDir "
            "(set spec.checkpoint.size or claimName to keep them)"
        )
    wanted = _wanted(args.checkpoint)
    output = args.dest or Path(args.name)
    core = cluster.core()
    claim = checkpoint_claim_name(job)
    try:
        core.read_namespaced_persistent_volume_claim(claim, cluster.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise CliError(f"read claim {cluster.namespace}/{claim}: {exc.reason}") from None
        raise CliError(f"{args.name}'s checkpoint volume claim {claim} does not exist: the operator has not created it "
                       "yet (is it running?), or it was deleted") from None
    heads = cluster.call(
        "list head pods", core.list_namespaced_pod, cluster.namespace,
        label_selector=f"{c.LABEL_JOB}={args.name},{c.LABEL_ROLE}={c.ROLE_HEAD}",
    ).items
    running = [p for p in heads if p.status and p.status.phase == "Running" and p.spec.node_name]
    image = args.image or reader_image(job.spec.image or (heads[-1].spec.containers[0].image if heads else c.DEFAULT_IMAGE))
    manifest = reader_pod(job, image, node_name=running[0].spec.node_name if running else None)
    name = manifest["metadata"]["name"]
    cluster.call(f"create pod {cluster.namespace}/{name}", core.create_namespaced_pod, cluster.namespace, manifest)
    try:
        _wait_running(cluster, name, args.timeout)
        found = _exec_text(cluster, name, CONTAINER_NAME, ["sh", "-c", _LIST]).split()
        if not found:
            raise CliError(f"{args.name}'s checkpoint volume holds no complete checkpoint yet")
        found.sort(key=lambda folder: int(folder.rsplit("-", 1)[-1]))
        if wanted is None:
            chosen = found[-1]
        else:
            matches = [f for f in found if int(f.rsplit("-", 1)[-1]) == wanted]
            if not matches:
                raise CliError(f"{args.name} has no checkpoint {wanted}; it has {', '.join(found)}")
            chosen = matches[0]
        if (output / chosen).exists():
            raise CliError(f"{output / chosen} already exists; choose another folder with --dest")
        extras = _exec_text(cluster, name, CONTAINER_NAME, [
            "sh", "-c", f"cd {c.CHECKPOINT_MOUNT} && for f in {' '.join(EXTRAS)}; do [ -f \"$f\" ] && echo \"$f\"; done; true",
        ]).split()
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as archive:
            _exec_to(cluster, name, CONTAINER_NAME, ["tar", "-C", c.CHECKPOINT_MOUNT, "-cf", "-", chosen, *extras], archive)
            archive.seek(0)
            _extract(archive, output)
    finally:
        _delete(cluster, name)
    print(f"{args.name}: {chosen} -> {output / chosen}" + (f" (with {', '.join(extras)})" if extras else ""))
    return 0


def _wanted(text: str | None) -> int | None:
    if text is None:
        return None
    match = _ITERATION.match(text.strip())
    if not match:
        raise CliError(f"--checkpoint {text!r}: give an iteration number or an iteration-NNNNNN folder name")
    return int(match.group(1))


def _wait_running(cluster: Cluster, name: str, timeout: float) -> None:
    """Until the reader runs; on timeout, the reason the kubelet or the scheduler gave."""
    core = cluster.core()
    deadline = time.monotonic() + timeout
    why = "not started"
    while True:
        pod = cluster.call(f"get pod {name}", core.read_namespaced_pod, name, cluster.namespace)
        phase = pod.status.phase if pod.status else None
        if phase == "Running":
            return
        if phase in ("Succeeded", "Failed"):
            raise CliError(f"the reader pod {name} ended ({phase}) before the copy: {pod.status.reason or ''} "
                           f"{pod.status.message or ''}".strip())
        why = _pending_reason(pod) or why
        if time.monotonic() >= deadline:
            raise CliError(f"the reader pod {name} did not start within {timeout:g}s: {why} "
                           "(--image to use another image, --timeout to wait longer)")
        time.sleep(1.0)


def _pending_reason(pod: Any) -> str | None:
    status = pod.status
    for cs in (status.container_statuses or []) if status else []:
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason:
            return f"{waiting.reason}: {waiting.message or ''}".strip(": ")
    for cond in (status.conditions or []) if status else []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return f"{cond.reason}: {cond.message or ''}".strip(": ")
    return None


def _exec_text(cluster: Cluster, pod: str, container: str, command: list[str]) -> str:
    with tempfile.TemporaryFile() as buffer:
        _exec_to(cluster, pod, container, command, buffer)
        buffer.seek(0)
        return buffer.read().decode("utf-8", "replace")


def _exec_to(cluster: Cluster, pod: str, container: str, command: list[str], sink: IO[bytes]) -> None:
    """Runs `command` in the pod with its stdout written to `sink` as it arrives; raises CliError unless it exits 0."""
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

    core = cluster.core()
    ws = cluster.call(
        f"exec in pod {pod}", stream, core.connect_get_namespaced_pod_exec, pod, cluster.namespace,
        container=container, command=command, stdout=True, stderr=True, stdin=False, tty=False,
        _preload_content=False, binary=True,
    )
    stderr, status = b"", b""
    try:
        while True:
            ws.update(timeout=1)
            # read_channel() of a channel with nothing buffered updates again, and may buffer more of the others:
            # those stay buffered for the next round. (The client's read_all() would drop them: it empties every
            # channel, and a tar stream missing a piece ends early without an error.)
            sink.write(ws.read_channel(STDOUT_CHANNEL))
            stderr += ws.read_channel(STDERR_CHANNEL)
            status += ws.read_channel(ERROR_CHANNEL)
            if hasattr(ws, "_all"):  # the client's second copy of all output, which nothing here reads
                ws._all = ws._all.__class__()
            if not ws.is_open():
                sink.write(ws.read_channel(STDOUT_CHANNEL))
                stderr += ws.read_channel(STDERR_CHANNEL)
                status += ws.read_channel(ERROR_CHANNEL)
                break
    finally:
        ws.close()
    code = _exit_code(status)
    if code != 0:
        detail = stderr.decode("utf-8", "replace").strip().splitlines()
        raise CliError(f"{command[0]} in the reader pod {pod} failed (exit {code})" + (f": {detail[-1]}" if detail else ""))


def _exit_code(status: bytes) -> int:
    """The exit code in the exec's status message (channel 3); 0 for Success."""
    try:
        body = json.loads(status.decode("utf-8") or "{}")
    except ValueError:
        return -1
    if body.get("status") == "Success":
        return 0
    for cause in (body.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", -1))
    return -1


def _extract(archive: IO[bytes], output: Path) -> None:
    """Unpacks the tar into `output`, refusing links and paths outside it (the data filter)."""
    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(output, filter="data")
            else:  # Pythons before the extraction filters: plain files and folders below `output` only
                for member in tar.getmembers():
                    path = Path(member.name)
                    if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                        raise tarfile.TarError(f"refusing {member.name!r}")
                tar.extractall(output)
    except (tarfile.TarError, OSError) as exc:
        raise CliError(f"cannot unpack the checkpoint into {output}: {exc}") from None


def _delete(cluster: Cluster, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.core().delete_namespaced_pod(name, cluster.namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            print(f"rljob fetch: warning: could not delete the reader pod {name} ({exc.status} {exc.reason}); "
                  "it ends by itself, and goes with the job", file=sys.stderr)
    except Exception as exc:  # an unreachable cluster while cleaning up: the pod's deadline ends it
        print(f"rljob fetch: warning: could not delete the reader pod {name}: {exc}", file=sys.stderr)
