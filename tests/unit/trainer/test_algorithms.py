"""The algorithm profiles: each row's classes are the ones RLlib builds that algorithm with; sizing reads the rows."""
from __future__ import annotations

import pytest

from rljob.trainer.algorithms import PROFILES, load, profile
from rljob.trainer.errors import ConfigError
from rljob.trainer.sizing import default_aggregators, learns_in_turn


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_profiles_classes_extend_rllibs_own_for_that_algorithm(name: str) -> None:
    row = profile(name)
    config = row.config()
    assert config.algo_class.__name__ == name
    assert issubclass(load(row.learner_class), config.get_default_learner_class())
    assert issubclass(load(row.frame_stack_module), config.get_default_rl_module_spec().module_class)


def test_only_an_algorithm_that_samples_and_learns_in_turn_learns_on_the_runners_cores() -> None:
    assert [n for n, p in PROFILES.items() if p.learns_in_turn] == ["PPO"]
    assert learns_in_turn("PPO", 0) and not learns_in_turn("APPO", 0) and not learns_in_turn("PPO", 1)


def test_aggregators_follow_the_profile_on_a_gpu_only() -> None:
    assert (default_aggregators("APPO", 1), default_aggregators("APPO", 0.5), default_aggregators("PPO", 1)) == (2, 0, 0)


def test_an_algorithm_without_a_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no built-in support for the algorithm 'IMPALA' \(choose from APPO, PPO\)"):
        default_aggregators("IMPALA", 1)
    with pytest.raises(ConfigError, match="'DQN'"):
        learns_in_turn("DQN", 0)


def test_a_relative_path_is_read_from_rljob_trainer() -> None:
    from rljob.trainer.sizing import plan_resources

    assert load(".sizing:plan_resources") is plan_resources
    assert load("rljob.trainer.sizing:plan_resources") is plan_resources
