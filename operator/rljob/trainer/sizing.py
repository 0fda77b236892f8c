"""How many env runners, learners and object-store bytes a run gets: pure arithmetic on resources.

Kept apart from Ray so that the policy (one env runner per spare CPU, the learner on a GPU when there
is one, a core left for the learner) is unit-tested and identical in the pods and in `rljob run`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..api.quantity import parse_quantity
from .algorithms import profile
from .errors import ConfigError

# Ray refuses an object store smaller than this.
MIN_OBJECT_STORE_BYTES = 75 * 1024 * 1024
# Share of /dev/shm given to Ray's object store: the rest stays for torch and NCCL, which use it too.
OBJECT_STORE_SHM_FRACTION = 0.7


@dataclass(frozen=True)
class ResourcePlan:
    """Sizing decisions for one run; `notes` explain any adjustment to the user."""

    num_env_runners: int
    cpus_per_env_runner: float
    num_learners: int
    gpus_per_learner: float
    notes: tuple[str, ...] = field(default=())
    gpus_per_env_runner: float = 0.0

    @property
    def learner_in_driver(self) -> bool:
        """RLlib's `num_learners=0`: the learner runs in the driver's process, on the driver's cores."""
        return self.num_learners == 0


def learns_in_turn(algorithm: str, cluster_gpus: float) -> bool:
    """A CPU learner of an algorithm that samples and learns in turn: it may use the cores the env runners leave
    idle while it learns."""
    return cluster_gpus < 1 and profile(algorithm).learns_in_turn


def plan_resources(
    cluster_cpus: float,
    cluster_gpus: float,
    requested_env_runners: int | None,
    aggregators: int = 0,
    cpus_per_env_runner: float | None = None,
    gpus_per_env_runner: float = 0.0,
    in_turn: bool = False,
) -> ResourcePlan:
    """One env runner per spare CPU (or per `cpus_per_env_runner` spare CPUs); fractional CPUs if asked for more.

    Fat runners (several CPUs each) suit a runner whose envs step on native threads (the ALE vector
    env): fewer copies of the policy network, bigger inference batches. Ray would otherwise leave env
    runners that do not fit pending forever, and the run would hang instead of running slower; a note
    says so.

    A GPU share per env runner (its policy infers there) comes out of the learner's GPU: with one GPU
    and 4 runners x 0.1, the learner gets 0.6. Shares that do not fit are a configuration error, not a
    run that hangs waiting for resources.

    `in_turn` (a synchronous algorithm on CPUs, see `learns_in_turn`): the learner runs in the driver's
    process and learns while the env runners wait for the next round, so it reserves no CPU and the
    env runners get them all; on two cores this samples and learns about 1.5x faster than one core each.
    """
    gpus = int(cluster_gpus)
    in_turn = in_turn and not gpus
    num_learners = 0 if in_turn else max(1, gpus)
    learner_cpus = 0 if gpus or in_turn else num_learners  # Ray's accounting: a GPU learner asks for 0 CPUs
    # Physically a GPU learner still needs a core to feed the GPU, so the default keeps one back.
    usable = math.floor(cluster_cpus) - (0 if in_turn else max(learner_cpus, 1)) - aggregators
    per_runner = cpus_per_env_runner or 1.0
    default = max(1, math.floor(usable / per_runner))
    notes: list[str] = []
    runners = default if requested_env_runners is None else requested_env_runners
    spare = max(0.0, cluster_cpus - learner_cpus - aggregators)
    cpus_each = per_runner
    if runners > 0 and runners * per_runner > spare:
        cpus_each = math.floor(spare / runners * 100) / 100
        notes.append(
            f"{runners} env runners x {per_runner:g} CPU do not fit in {spare:g} spare CPUs; they get {cpus_each:g} CPU "
            "each and will run, but slower"
        )
    gpus_each: float = 1 if gpus else 0
    if gpus_per_env_runner > 0:
        flag = f"--gpus-per-env-runner {gpus_per_env_runner:g}"
        if cluster_gpus <= 0:
            raise ConfigError(f"{flag}: the cluster has no GPU (give the head spec.head.gpus, or leave the flag out)")
        left = round(cluster_gpus - runners * gpus_per_env_runner, 2)
        if left >= 1:
            num_learners, gpus_each = int(left), 1
        elif left >= 0.5:
            num_learners, gpus_each = 1, left
        else:
            raise ConfigError(
                f"{flag}: {runners} env runners take {runners * gpus_per_env_runner:g} of the cluster's {cluster_gpus:g} "
                "GPU(s), leaving the learner less than half a GPU; give a smaller share or fewer env runners"
            )
    return ResourcePlan(runners, cpus_each, num_learners, gpus_each, tuple(notes), gpus_per_env_runner)


def default_aggregators(algorithm: str, cluster_gpus: float) -> int:
    """On a GPU learner, the aggregator actors the algorithm's profile asks for build train batches off the
    learner's process; on a CPU learner they would only take cores away from the env runners."""
    return profile(algorithm).aggregators if cluster_gpus >= 1 else 0


def local_env_runners(
    replicas: int,
    worker_cpu: str,
    head_cpu: str,
    cores: int,
    cpus_per_env_runner: float | None = None,
    in_turn: bool = False,
) -> tuple[int, str | None]:
    """Maps the manifest's worker pods onto this machine: their CPUs in env runners, capped by local cores.

    One core is kept for the learner unless it learns in turn with the env runners (`learns_in_turn`);
    the returned note (if any) tells the user about the cap.
    """
    per_runner = cpus_per_env_runner or 1.0
    if replicas > 0:
        wanted = replicas * max(1, math.floor(max(1, math.floor(parse_quantity(worker_cpu))) / per_runner))
        source = f"workers.replicas={replicas} x cpu={worker_cpu}"
    else:
        head = math.floor(parse_quantity(head_cpu)) - (0 if in_turn else 1)
        wanted = max(1, math.floor(head / per_runner))
        source = f"head.cpu={head_cpu}" + ("" if in_turn else " minus one for the learner") + " (workers.replicas=0)"
    spare = cores if in_turn else cores - 1
    cap = max(1, math.floor(spare / per_runner))
    if wanted > cap:
        kept = "" if in_turn else " (one core is kept for the learner)"
        return cap, f"note: the job asks for {wanted} env runners ({source}); this machine has {cores} cores, so {cap} run here{kept}"
    return wanted, None


def object_store_bytes(shm_bytes: int) -> int:
    """Ray's object store lives in /dev/shm, so it must fit there with room to spare."""
    return max(MIN_OBJECT_STORE_BYTES, int(shm_bytes * OBJECT_STORE_SHM_FRACTION))
