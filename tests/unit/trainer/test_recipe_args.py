"""Recipe arguments: defaults, argparse-style one-line errors as ConfigError, spec/args merging."""
from __future__ import annotations

import pytest

from rljob.api.constants import EXIT_CONFIG_ERROR
from rljob.api.models import JobSpec
from rljob.trainer.errors import ConfigError
from rljob.trainer.recipes import get_recipe, prepare
from rljob.trainer.stop import StopCriteria


def test_pong_defaults_follow_rllib_pong_example() -> None:
    run = prepare("pong", [])
    o = run.options
    assert run.recipe.algorithm == "APPO"
    assert o.env == "ale_py:ALE/Pong-v5"
    assert (o.train_batch_size, o.lr, o.framestack, o.model) == (500, 0.0005, 4, "pong")
    assert o.num_env_runners is None and o.num_aggregators is None


def test_args_are_parsed_with_types() -> None:
    o = prepare("pong", ["--num-env-runners", "3", "--lr", "1e-4", "--stop-reward", "-5", "--model", "tiny"]).options
    assert (o.num_env_runners, o.lr, o.stop_reward, o.model) == (3, 1e-4, -5.0, "tiny")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "recipe pong: error: unrecognized arguments: --bogus"),
        (["--lr", "abc"], "recipe pong: error: argument --lr: invalid positive float value: 'abc'"),
        (["--num-env-runners", "-1"], "argument --num-env-runners: invalid non-negative int value: '-1'"),
        (["--stop-timesteps", "1.5"], "argument --stop-timesteps: invalid positive int value: '1.5'"),
        (["--model", "huge"], "argument --model: invalid choice: 'huge'"),
        (["--num-env"], "unrecognized arguments: --num-env"),  # no abbreviations: typos must not match
    ],
)
def test_bad_args_raise_one_line_config_error(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        prepare("pong", args)
    assert err.value.exit_code == EXIT_CONFIG_ERROR
    assert len(err.value.lines) == 1
    assert message in err.value.lines[0]


def test_unknown_recipe() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'atari'"):
        get_recipe("atari")


def test_cartpole_recipe() -> None:
    run = prepare("cartpole", ["--train-batch-size", "200"])
    assert run.recipe.algorithm == "PPO"
    assert run.options.train_batch_size == 200


def test_pong_steps_envs_with_ales_vector_env_on_the_runners_cpus() -> None:
    from rljob.trainer.sizing import ResourcePlan

    plan = ResourcePlan(num_env_runners=3, cpus_per_env_runner=4.0, num_learners=1, gpus_per_learner=1)
    config = _config("pong", [], plan)
    assert config.gym_env_vectorize_mode == "vector_entry_point"
    assert (config.num_env_runners, config.num_cpus_per_env_runner, config.num_envs_per_env_runner) == (3, 4.0, 8)
    assert config.env_config["num_threads"] == 4
    sync = _config("pong", ["--vectorize", "sync", "--cpus-per-env-runner", "2"], plan)
    assert sync.gym_env_vectorize_mode == "sync" and "num_threads" not in sync.env_config
    assert sync.num_envs_per_env_runner == 2


def _config(recipe: str, args: list[str], plan: object) -> object:
    run = prepare(recipe, args)
    return run.recipe.build_config(run.options, plan)


def _spec(stop: dict[str, object] | None) -> JobSpec:
    data: dict[str, object] = {"entrypoint": {"recipe": "pong"}}
    if stop is not None:
        data["stop"] = stop
    return JobSpec.model_validate(data)


def test_stop_from_spec_and_args_merge_with_args_winning() -> None:
    spec = _spec({"episodeReturnMean": 18, "envSteps": 1000, "iterations": 5})
    options = prepare("pong", ["--stop-reward", "10", "--stop-iters", "7"]).options
    criteria = StopCriteria.build(spec, options)
    assert (criteria.episode_return_mean, criteria.env_steps, criteria.iterations) == (10.0, 1000, 7)


def test_stop_from_args_alone_and_run_limits() -> None:
    criteria = StopCriteria.build(_spec(None), prepare("pong", ["--stop-timesteps", "50"]).options, 3, 60.0)
    assert (criteria.env_steps, criteria.episode_return_mean, criteria.run_iterations, criteria.run_seconds) == (
        50, None, 3, 60.0,
    )
