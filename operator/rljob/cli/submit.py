"""`rljob submit`: a job from a source directory and a few flags, for people who would rather not
write YAML. The manifests are built by pure functions (so `--dry-run` shows exactly what is sent).
"""
from __future__ import annotations

import argparse
import base64
import io
import secrets
import sys
import tarfile
from pathlib import Path
from typing import Any

import yaml

from ..api import ManifestError, parse_job
from ..api import constants as c
from ..api.models import RECIPES

CONFIGMAP_LIMIT = 1024 * 1024  # bytes the API server accepts in one ConfigMap's data
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules", "runs"}
SKIP_SUFFIXES = (".pyc", ".pyo")


def register(sub: argparse._SubParsersAction) -> None:
    from .cluster import add_cluster_flags

    p = sub.add_parser(
        "submit", help="submit a training job from a source directory (or a built-in recipe)",
        description="Pack a source directory into a ConfigMap, create an RLTrainingJob that runs ENTRY with the "
        "arguments after --, and optionally follow it. Example: rljob submit --source-dir files --entry "
        "pong_impala.py --workers 4 --head-gpus 1 --wait -- --stop-reward 18",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--entry", metavar="SCRIPT", help="script to run, relative to --source-dir")
    what.add_argument("--recipe", choices=RECIPES, help="a built-in recipe instead of a script")
    p.add_argument("--source-dir", type=Path, help="directory holding the script and its files (packed into a ConfigMap)")
    p.add_argument("--name", help="job name (default: derived from the script or recipe, plus a random suffix)")
    p.add_argument("--experiment", default=None, help="experiment name (groups runs; a label)")
    p.add_argument("--image", default=None, help="runtime image (default: the operator's)")
    p.add_argument("--workers", type=int, default=2, help="worker pods (default %(default)s)")
    p.add_argument("--worker-cpu", default=None, help="CPU per worker pod, e.g. 4")
    p.add_argument("--worker-memory", default=None, help="memory per worker pod, e.g. 8Gi")
    p.add_argument("--worker-gpus", type=int, default=0, help="GPUs per worker pod (default %(default)s)")
    p.add_argument("--head-gpus", type=int, default=0, help="GPUs for the head pod (default %(default)s)")
    p.add_argument("--head-cpu", default=None, help="CPU for the head pod, e.g. 8")
    p.add_argument("--head-memory", default=None, help="memory for the head pod, e.g. 32Gi")
    p.add_argument("--head-shm", default=None, help="/dev/shm for the head pod (default: a quarter of --head-memory when given)")
    p.add_argument("--worker-shm", default=None, help="/dev/shm per worker pod (default: a quarter of --worker-memory when given)")
    p.add_argument("--pip", action="append", default=[], metavar="PKG", help="extra pip requirement (repeatable)")
    p.add_argument("--allow-internet-egress", action="store_true", help="let the job's pods reach the internet (needed by --pip)")
    p.add_argument("--coordination-timeout", type=int, default=None, metavar="S", help="seconds for the Ray cluster to come up")
    p.add_argument("--max-run-duration", type=int, default=None, metavar="S", help="cut the job off after S seconds")
    p.add_argument("--backoff-limit", type=int, default=None, help="retries of a failed driver")
    p.add_argument("--checkpoint-size", default=None, help="create a checkpoint volume of this size, e.g. 10Gi")
    p.add_argument("--wait", action="store_true", help="follow the job with a live display until it ends")
    p.add_argument("--dry-run", action="store_true", help="print the manifests instead of creating them (no cluster needed)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="-- then the arguments for the script or recipe")
    add_cluster_flags(p)
    p.set_defaults(func=run)


class SubmitError(Exception):
    """A problem with the flags or the source directory; one line for the user."""


def pack_source(directory: Path, archive_over: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    """The directory as ConfigMap (data, binaryData). A flat directory of text files maps key per file,
    readable with kubectl; anything nested (ConfigMap keys cannot hold '/') or binary goes into one
    compressed archive that the driver unpacks."""
    if not directory.is_dir():
        raise SubmitError(f"--source-dir {directory}: not a directory")
    files = sorted(
        p for p in directory.rglob("*")
        if p.is_file() and not (set(p.relative_to(directory).parts[:-1]) & SKIP_DIRS) and not p.name.endswith(SKIP_SUFFIXES)
    )
    if not files:
        raise SubmitError(f"--source-dir {directory}: no files to send")
    flat: dict[str, str] = {}
    nested = False
    for path in files:
        rel = path.relative_to(directory)
        if len(rel.parts) > 1:
            nested = True
            break
        try:
            flat[rel.name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            nested = True
            break
    if not nested and sum(len(v.encode()) for v in flat.values()) > archive_over:
        return flat, {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return {}, {c.SOURCE_ARCHIVE_KEY: base64.b64encode(buf.getvalue()).decode()}


def configmap_size(data: dict[str, str], binary: dict[str, str]) -> int:
    return sum(len(k) + len(v.encode()) for k, v in data.items()) + sum(len(k) + len(v) for k, v in binary.items())


def default_name(args: argparse.Namespace) -> str:
    stem = Path(args.entry).stem if args.entry else args.recipe
    clean = "".join(ch if ch.isalnum() else "-" for ch in stem.lower()).strip("-") or "job"
    if not clean[0].isalpha():
        clean = "job-" + clean
    return f"{clean[: c.MAX_JOB_NAME_LENGTH - 6].rstrip('-')}-{secrets.token_hex(2)}"


def build_manifests(args: argparse.Namespace, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(job, source ConfigMap or None), validated by the same model the operator uses."""
    script_args = list(args.script_args)
    if script_args and script_args[0] == "--":
        script_args = script_args[1:]
    spec: dict[str, Any] = {"entrypoint": {"args": script_args}}
    configmap = None
    if args.entry:
        if args.source_dir is None:
            raise SubmitError("--entry needs --source-dir (the directory the script lives in)")
        if not (args.source_dir / args.entry).is_file():
            raise SubmitError(f"--entry {args.entry}: no such file in {args.source_dir}")
        data, binary = pack_source(args.source_dir)
        size = configmap_size(data, binary)
        if size > CONFIGMAP_LIMIT:
            raise SubmitError(
                f"--source-dir {args.source_dir} packs to {size / 2**20:.2f} MiB; a ConfigMap holds at most 1 MiB. "
                "Keep data and checkpoints out of it (build them into an image or use a volume)."
            )
        spec["entrypoint"]["script"] = args.entry
        cm_name = f"{name}-source"
        spec["source"] = {"configMap": {"name": cm_name}}
        configmap = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm_name, "namespace": namespace,
                         "labels": {c.LABEL_JOB: name, c.LABEL_APP_NAME: c.APP_NAME, c.LABEL_APP_PART_OF: c.APP_NAME}},
            **({"data": data} if data else {}), **({"binaryData": binary} if binary else {}),
        }
    else:
        if args.source_dir is not None:
            raise SubmitError("--source-dir is for --entry scripts; a recipe needs no source")
        spec["entrypoint"]["recipe"] = args.recipe
    if args.experiment:
        spec["experiment"] = args.experiment
    if args.image:
        spec["image"] = args.image
    head: dict[str, Any] = {"gpus": args.head_gpus}
    workers: dict[str, Any] = {"replicas": args.workers, "gpus": args.worker_gpus}
    for target, key, value in ((head, "cpu", args.head_cpu), (head, "memory", args.head_memory),
                               (head, "shmSize", args.head_shm or _quarter(args.head_memory)),
                               (workers, "cpu", args.worker_cpu), (workers, "memory", args.worker_memory),
                               (workers, "shmSize", args.worker_shm or _quarter(args.worker_memory))):
        if value is not None:
            target[key] = value
    spec["head"], spec["workers"] = head, workers
    if args.pip:
        if not args.allow_internet_egress:
            raise SubmitError("--pip needs network egress: add --allow-internet-egress (the job is isolated by default)")
        spec["pipPackages"] = list(args.pip)
    if args.allow_internet_egress:
        spec["network"] = {"allowInternetEgress": True}
    for key, value in (("clusterCoordinationTimeoutSeconds", args.coordination_timeout),
                       ("maxRunDurationSeconds", args.max_run_duration), ("backoffLimit", args.backoff_limit)):
        if value is not None:
            spec[key] = value
    if args.checkpoint_size:
        spec["checkpoint"] = {"size": args.checkpoint_size}
    labels = {c.LABEL_EXPERIMENT: args.experiment} if args.experiment else {}
    job = {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}
    parse_job(job, "submit")  # the flags become exactly what the API server would accept
    if args.recipe:
        check_recipe_args(args.recipe, script_args)
    return job, configmap


def check_recipe_args(recipe: str, recipe_args: list[str]) -> None:
    """Refuses arguments the recipe does not take before anything is created: the CRD holds them as plain
    strings, so otherwise the job would only fail once its head pod ran the driver (DriverFailed).
    Parsing needs no ray: recipes build their parsers from the standard library alone."""
    from ..trainer.errors import ConfigError
    from ..trainer.recipes import prepare

    try:
        prepare(recipe, recipe_args)
    except ConfigError as exc:
        raise SubmitError(f"spec.entrypoint.args: {exc}") from None


def _quarter(memory: str | None) -> str | None:
    """/dev/shm counts against the pod's memory: a quarter leaves room for the processes themselves."""
    if memory is None:
        return None
    from ..api.quantity import parse_quantity

    try:
        return f"{max(1, int(parse_quantity(memory) / 4 / 2**20))}Mi"
    except ValueError:
        return None  # the model reports the bad memory value itself


def run(args: argparse.Namespace) -> int:
    from .cluster import CliError, connect, target_namespace

    name = args.name or default_name(args)
    try:
        # Every check first, with nothing contacted: a refused flag or recipe argument never waits on the cluster.
        job, configmap = build_manifests(args, target_namespace(args), name)
        cluster = None if args.dry_run else connect(args)
        if cluster is not None:
            for doc in (job, configmap):
                if doc:
                    doc["metadata"]["namespace"] = cluster.namespace
    except (SubmitError, CliError) as exc:
        print(f"rljob: {exc}", file=sys.stderr)
        return 2
    except ManifestError as exc:
        for problem in exc.problems:
            print(f"rljob: {problem}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump_all([d for d in (configmap, job) if d], sort_keys=False))
        return 0
    assert cluster is not None
    try:
        created = _create(cluster, job, configmap)
    except CliError as exc:
        print(f"rljob: {exc}", file=sys.stderr)
        return 1
    print(f"{c.SINGULAR}.{c.GROUP}/{name} created in namespace {cluster.namespace}")
    if not args.wait:
        print(f"  follow it:  rljob status {name} -n {cluster.namespace}   |   kubectl get rltj {name} -w")
        return 0
    from .follow import follow

    return follow(cluster, created["metadata"]["name"])


def _create(cluster: Any, job: dict[str, Any], configmap: dict[str, Any] | None) -> dict[str, Any]:
    ns = cluster.namespace
    core, custom = cluster.core(), cluster.custom()
    # The CRD first: without it nothing else should be left behind.
    cluster.call(f"check the {c.KIND} API", custom.list_namespaced_custom_object, c.GROUP, c.VERSION, ns, c.PLURAL, limit=1)
    if configmap:
        cluster.call(f"create ConfigMap {configmap['metadata']['name']}", core.create_namespaced_config_map, ns, configmap)
    try:
        created = cluster.call(f"create {c.SINGULAR} {job['metadata']['name']}", custom.create_namespaced_custom_object,
                               c.GROUP, c.VERSION, ns, c.PLURAL, job)
    except Exception:
        if configmap:  # loses nothing: the source goes away with the failed submission
            cluster.call("clean up", core.delete_namespaced_config_map, configmap["metadata"]["name"], ns)
        raise
    if configmap:
        owner = {"apiVersion": c.API_VERSION, "kind": c.KIND, "name": created["metadata"]["name"],
                 "uid": created["metadata"]["uid"], "blockOwnerDeletion": False, "controller": False}
        cluster.call("own the source ConfigMap", core.patch_namespaced_config_map, configmap["metadata"]["name"], ns,
                     {"metadata": {"ownerReferences": [owner]}})
    return created
