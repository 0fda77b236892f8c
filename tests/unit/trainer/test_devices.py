"""A head given GPUs that CUDA cannot see fails at once, as a configuration error that names the cause."""

from __future__ import annotations

import pytest

from rljob.api.constants import EXIT_CONFIG_ERROR
from rljob.trainer.devices import check_gpus, check_visible_gpus
from rljob.trainer.errors import ConfigError


@pytest.mark.parametrize(("wanted", "seen"), [(0, 0), (1, 1), (1, 2), (2, 2)])
def test_enough_devices_pass(wanted: int, seen: int) -> None:
    check_gpus(wanted, seen, "13.0")


def test_a_cpu_only_torch_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        check_gpus(1, 0, None)
    assert err.value.exit_code == EXIT_CONFIG_ERROR
    assert "spec.head.gpus asks for 1 GPU(s), but this pod sees 0 CUDA device(s)" in str(err.value)
    assert "built without CUDA" in str(err.value)


def test_a_node_that_does_not_hand_the_gpu_over_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        check_gpus(2, 1, "13.0")
    assert "sees 1 CUDA device(s) (torch built for CUDA 13.0)" in str(err.value)
    assert "device plugin" in str(err.value)


def test_this_machine_without_a_gpu_fails_the_check_only_when_gpus_are_asked_for() -> None:
    torch = pytest.importorskip("torch")
    check_visible_gpus(0)
    if torch.cuda.device_count() == 0:
        with pytest.raises(ConfigError):
            check_visible_gpus(1)
