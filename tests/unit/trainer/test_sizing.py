"""Resource sizing: env runners per spare CPU, the learner's GPU, local caps, object store in /dev/shm."""
from __future__ import annotations

import pytest

from rljob.trainer.errors import ConfigError
from rljob.trainer.sizing import (
    MIN_OBJECT_STORE_BYTES,
    default_aggregators,
    learns_in_turn,
    local_env_runners,
    object_store_bytes,
    plan_resources,
)


def test_one_env_runner_per_cpu_minus_the_learner() -> None:
    plan = plan_resources(cluster_cpus=6, cluster_gpus=0, requested_env_runners=None)
    assert (plan.num_env_runners, plan.cpus_per_env_runner, plan.num_learners, plan.gpus_per_learner) == (5, 1.0, 1, 0)
    assert plan.notes == ()


def test_gpu_learner_and_aggregators() -> None:
    plan = plan_resources(cluster_cpus=16, cluster_gpus=1, requested_env_runners=None, aggregators=2)
    # One core stays with the GPU learner, two go to aggregator actors.
    assert (plan.num_env_runners, plan.gpus_per_learner, plan.num_learners) == (13, 1, 1)


def test_multi_gpu_gets_one_learner_per_gpu() -> None:
    assert plan_resources(32, 4, None).num_learners == 4


def test_requested_more_than_fits_shares_cpus_with_a_note() -> None:
    plan = plan_resources(cluster_cpus=2, cluster_gpus=0, requested_env_runners=4)
    assert plan.num_env_runners == 4
    assert plan.cpus_per_env_runner == 0.25
    assert "4 env runners x 1 CPU do not fit in 1 spare CPUs; they get 0.25 CPU each" in plan.notes[0]


def test_fat_env_runners_divide_the_spare_cpus() -> None:
    # 16 CPUs + 1 GPU: one core feeds the GPU, two go to aggregators, 13 remain: three runners of 4 CPUs.
    plan = plan_resources(16, 1, None, aggregators=2, cpus_per_env_runner=4)
    assert (plan.num_env_runners, plan.cpus_per_env_runner, plan.notes) == (3, 4.0, ())
    plan = plan_resources(6, 0, 2, cpus_per_env_runner=2)
    assert (plan.num_env_runners, plan.cpus_per_env_runner, plan.notes) == (2, 2.0, ())
    squeezed = plan_resources(6, 0, 3, cpus_per_env_runner=2)
    assert squeezed.cpus_per_env_runner == 1.66 and "3 env runners x 2 CPU do not fit in 5 spare CPUs" in squeezed.notes[0]
    assert plan_resources(2, 0, None, cpus_per_env_runner=4).num_env_runners == 1


def test_tiny_cluster_still_gets_one_runner() -> None:
    plan = plan_resources(cluster_cpus=1, cluster_gpus=0, requested_env_runners=None)
    assert plan.num_env_runners == 1 and plan.cpus_per_env_runner == 0.0


def test_default_aggregators() -> None:
    assert default_aggregators("APPO", 1) == 2
    assert default_aggregators("APPO", 0) == 0
    assert default_aggregators("PPO", 1) == 0


def test_local_env_runners_map_workers_and_cap_by_cores() -> None:
    assert local_env_runners(2, "2", "2", cores=16) == (4, None)
    n, note = local_env_runners(4, "4", "2", cores=4)
    assert n == 3
    assert note is not None and "asks for 16 env runners" in note and "4 cores" in note
    assert local_env_runners(0, "2", "4", cores=16) == (3, None)  # head only: its CPUs minus the learner's
    assert local_env_runners(1, "500m", "2", cores=8) == (1, None)


def test_a_synchronous_cpu_learner_learns_in_the_driver_on_the_env_runners_cores() -> None:
    assert learns_in_turn("PPO", 0) and not learns_in_turn("PPO", 1) and not learns_in_turn("APPO", 0)
    plan = plan_resources(2, 0, None, cpus_per_env_runner=2, in_turn=True)
    assert (plan.num_env_runners, plan.cpus_per_env_runner, plan.num_learners, plan.learner_in_driver) == (1, 2.0, 0, True)
    assert plan.notes == ()
    assert plan_resources(6, 0, None, in_turn=True).num_env_runners == 6
    gpu = plan_resources(6, 1, None, in_turn=True)  # a GPU learner is a learner actor: it never waits on the CPUs
    assert (gpu.num_learners, gpu.num_env_runners, gpu.learner_in_driver) == (1, 5, False)


def test_local_env_runners_in_turn_and_fat() -> None:
    # PPO on a 2-core laptop, one worker of 2 CPUs, runners of 2 CPUs: one runner on both cores.
    assert local_env_runners(1, "2", "2", cores=2, cpus_per_env_runner=2, in_turn=True) == (1, None)
    assert local_env_runners(0, "4", "4", cores=8, in_turn=True) == (4, None)  # head only: all its CPUs
    n, note = local_env_runners(2, "4", "2", cores=4, cpus_per_env_runner=2)
    assert n == 1 and note is not None and "asks for 4 env runners" in note and "one core is kept for the learner" in note


def test_object_store_fits_in_shm() -> None:
    assert object_store_bytes(2 * 2**30) == int(2 * 2**30 * 0.7)
    assert object_store_bytes(1) == MIN_OBJECT_STORE_BYTES


def test_env_runner_gpu_shares_come_out_of_the_learners_gpu() -> None:
    plan = plan_resources(16, 1, 4, cpus_per_env_runner=3, gpus_per_env_runner=0.1)
    assert (plan.num_learners, plan.gpus_per_learner, plan.gpus_per_env_runner) == (1, 0.6, 0.1)
    assert plan_resources(16, 2, 4, gpus_per_env_runner=0.1).gpus_per_learner == 1


def test_env_runner_gpu_shares_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"--gpus-per-env-runner 0.25: the cluster has no GPU"):
        plan_resources(8, 0, 2, gpus_per_env_runner=0.25)
    with pytest.raises(ConfigError, match=r"4 env runners take 1 of the cluster's 1 GPU"):
        plan_resources(16, 1, 4, gpus_per_env_runner=0.25)
