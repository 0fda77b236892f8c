"""Every fact that more than one module needs: the API identity, label keys, ports, paths, names.

The trainer imports this module too (it runs in the pods), so it must stay import-light.
"""
from __future__ import annotations

from rljob import __version__

GROUP = "rljob.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RLTrainingJob"
LIST_KIND = "RLTrainingJobList"
PLURAL = "rltrainingjobs"
SINGULAR = "rltrainingjob"
SHORT_NAMES = ("rlj", "rltj")
# Not "all": `kubectl delete all --all` would delete the jobs, and with them their checkpoint volumes (as for
# Kubeflow's and KubeRay's kinds, `kubectl get rljob` lists what belongs to the project).
CATEGORIES = ("rljob",)
CRD_NAME = f"{PLURAL}.{GROUP}"

APP_NAME = "rljob"
MANAGED_BY = "rljob-operator"
FIELD_MANAGER = "rljob-operator"

# Labels. app.kubernetes.io/* for tools that know the recommended labels; rljob.dev/* for selectors.
LABEL_APP_NAME = "app.kubernetes.io/name"
LABEL_APP_INSTANCE = "app.kubernetes.io/instance"
LABEL_APP_COMPONENT = "app.kubernetes.io/component"
LABEL_APP_PART_OF = "app.kubernetes.io/part-of"
LABEL_APP_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = f"{GROUP}/job"
LABEL_ROLE = f"{GROUP}/role"
LABEL_EXPERIMENT = f"{GROUP}/experiment"
LABEL_ATTEMPT = f"{GROUP}/attempt"
# The UID of the job instance a child belongs to (as batch/v1 Job's controller-uid label): a job deleted and
# re-created under the same name is another instance, and never adopts the old one's children.
LABEL_CONTROLLER_UID = f"{GROUP}/controller-uid"
# On the head pod and the worker StatefulSet: a hash of the pods' size as the spec gave it when they were built
# (resources.meta.pod_size_hash). Pods whose hash is not the spec's were built before an edit of head or workers.
ANNOTATION_POD_SIZE = f"{GROUP}/pod-size-hash"

ROLE_HEAD = "head"
ROLE_WORKER = "worker"
COMPONENT_NETWORK = "network"
COMPONENT_RBAC = "rbac"
COMPONENT_STORAGE = "storage"
# The job's NetworkPolicies, named NAME-<purpose>: every pod of the job, and what only its head may do.
NETWORK_POLICY_ISOLATION = "isolation"
NETWORK_POLICY_HEAD = "head"

# Ray ports, fixed so that Services and NetworkPolicies can name them.
PORT_GCS = 6379
PORT_DASHBOARD = 8265
PORT_CLIENT = 10001
PORT_RAY_METRICS = 8080
PORT_METRICS = 9400  # the driver's endpoints: Prometheus (/metrics) and the progress the operator reads (/progress)
PORT_NODE_MANAGER = 6380
PORT_OBJECT_MANAGER = 6381
PORT_NAMES = {
    PORT_GCS: "gcs",
    PORT_DASHBOARD: "dashboard",
    PORT_CLIENT: "client",
    PORT_RAY_METRICS: "ray-metrics",
    PORT_METRICS: "metrics",
}

# The job holds no credentials: the operator reads each running head's progress over the pod network, as
# KubeRay reads a head's job API. GET http://<head pod IP>:PORT_METRICS/progress answers status.progress's JSON
# (camelCase) with at most MAX_PROGRESS_BYTES; the head's NetworkPolicy admits the operator's namespace there.
PROGRESS_PATH = "/progress"
MAX_PROGRESS_BYTES = 4096
# The driver also leaves its latest progress as the head container's termination message, {"progress": {...}}
# (Kubernetes keeps at most 4096 bytes of it), so an attempt's last record outlives its containers.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_PROGRESS_KEY = "progress"

# Paths inside the pods.
CHECKPOINT_MOUNT = "/rljob/checkpoints"
SOURCE_MOUNT = "/rljob/source"
TMP_MOUNT = "/tmp"
SHM_MOUNT = "/dev/shm"
CONTAINER_HOME = "/tmp/home"

CONTAINER_NAME_HEAD = "ray-head"
CONTAINER_NAME_WORKER = "ray-worker"

# Environment variables the operator sets in pods and the trainer reads.
ENV_JOB_NAME = "RLJOB_NAME"
ENV_NAMESPACE = "RLJOB_NAMESPACE"
ENV_JOB_SPEC = "RLJOB_SPEC"
# Workers get only the pip requirements (JSON list), not the spec: a spec in the StatefulSet's
# template would roll every worker on any edit of the job, even a change of replicas.
ENV_PIP_PACKAGES = "RLJOB_PIP_PACKAGES"
ENV_ATTEMPT = "RLJOB_ATTEMPT"
ENV_HEAD_ADDRESS = "RLJOB_HEAD_ADDRESS"
ENV_EXPECTED_WORKERS = "RLJOB_EXPECTED_WORKERS"
ENV_COORDINATION_DEADLINE = "RLJOB_COORDINATION_DEADLINE"
ENV_CHECKPOINT_DIR = "RLJOB_CHECKPOINT_DIR"
ENV_SOURCE_DIR = "RLJOB_SOURCE_DIR"
ENV_METRICS_PORT = "RLJOB_METRICS_PORT"
ENV_TERMINATION_LOG = "RLJOB_TERMINATION_LOG"
# The evaluation after a finished run (trainer/evaluate.py): games played, and agent steps after which a game is cut
# off. The only RLJOB_ names a job's spec.env may set; every other one is the operator's.
ENV_EVAL_EPISODES = "RLJOB_EVAL_EPISODES"
ENV_EVAL_MAX_STEPS = "RLJOB_EVAL_MAX_STEPS"
USER_ENV = (ENV_EVAL_EPISODES, ENV_EVAL_MAX_STEPS)
ENV_CPU = "RLJOB_CPU"
ENV_MEMORY = "RLJOB_MEMORY"
ENV_GPUS = "RLJOB_GPUS"
ENV_SHM_BYTES = "RLJOB_SHM_BYTES"

# Operator configuration (environment of the operator Deployment).
ENV_DEFAULT_IMAGE = "RLJOB_DEFAULT_IMAGE"
ENV_OPERATOR_NAMESPACE = "RLJOB_OPERATOR_NAMESPACE"
# Where the project's images are published (hack/images.sh's default REGISTRY, the chart's default repositories):
# REGISTRY/operator:VERSION and REGISTRY/runtime:VERSION-VARIANT, tagged with the package's version, which is the
# chart's appVersion (hack/release.sh refuses a release where they differ).
IMAGE_REGISTRY = "ghcr.io/rljob"
RUNTIME_REPOSITORY = f"{IMAGE_REGISTRY}/runtime"
DEFAULT_IMAGE = f"{RUNTIME_REPOSITORY}:{__version__}-cpu"
OPERATOR_IMAGE = f"{IMAGE_REGISTRY}/operator:{__version__}"

GPU_RESOURCE = "nvidia.com/gpu"

# Every child name is "<job>-<suffix>"; the longest derived name is a worker pod,
# "<job>-workers-<ordinal>", whose StatefulSet revision label must stay within 63 characters.
MAX_JOB_NAME_LENGTH = 40

# Exit code the driver uses for a configuration error: retrying cannot help.
EXIT_CONFIG_ERROR = 2

# `rljob submit` packs a nested or binary source directory into this one ConfigMap key (tar.gz);
# the driver unpacks it into a writable directory before running the script.
SOURCE_ARCHIVE_KEY = "rljob-source.tar.gz"

# Exit code the driver uses when the Ray cluster did not assemble before RLJOB_COORDINATION_DEADLINE.
EXIT_COORDINATION_TIMEOUT = 3

# Exit code of `rljob run` when maxRunDurationSeconds ran out (in a cluster the operator ends the job instead).
EXIT_DEADLINE_EXCEEDED = 4

# The reported mean return (status.progress.episodeReturnMean) covers this many of the latest episodes,
# RLlib's own default smoothing window (`metrics_num_episodes_for_smoothing`).
RETURN_WINDOW_EPISODES = 100

# Kueue (kueue.x-k8s.io): a job labelled with a queue name is admitted by Kueue as one Workload, the head
# and all its workers together; the operator creates that Workload and starts the job only once it is admitted.
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
KUEUE_API_VERSION = f"{KUEUE_GROUP}/{KUEUE_VERSION}"
KUEUE_QUEUE_LABEL = f"{KUEUE_GROUP}/queue-name"
KUEUE_FRAMEWORK = f"{KIND}.{VERSION}.{GROUP}"  # how Kueue's integrations.externalFrameworks names this kind
PODSET_HEAD = "head"
PODSET_WORKERS = "workers"
COMPONENT_WORKLOAD = "workload"

# The kinds of a job's children, as (apiVersion, kind): built by rljob.resources under these names, and created,
# watched, patched and deleted by the operator under the same ones.
POD = ("v1", "Pod")
STATEFULSET = ("apps/v1", "StatefulSet")
SERVICE = ("v1", "Service")
NETWORK_POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
CLAIM = ("v1", "PersistentVolumeClaim")
WORKLOAD = (KUEUE_API_VERSION, "Workload")
