"""Recipe arguments: defaults, argparse-style one-line errors as ConfigError, spec/args merging."""
from __future__ import annotations

import pytest

from rljob.api.constants import EXIT_CONFIG_ERROR
from rljob.api.models import JobSpec
from rljob.trainer.errors import ConfigError
from rljob.trainer.recipes import get_recipe, prepare
from rljob.trainer.stop import StopCriteria


def test_pong_defaults_follow_the_published_pong_anchors() -> None:
    run = prepare("pong", [])
    o = run.options
    assert run.recipe.algorithm == run.algorithm == "APPO"
    assert o.env == "ale_py:ALE/Pong-v5" and o.env_runner == "lean"
    assert (o.train_batch_size, o.lr, o.framestack, o.model) == (2000, 0.0005, 4, "pong")
    assert (o.grad_clip, o.entropy_coeff, o.entropy_decay_steps, o.broadcast_interval) == (10.0, 0.01, 0, 1)
    assert o.num_env_runners is None and o.num_aggregators is None
    assert prepare("pong", ["--algorithm", "PPO"]).algorithm == "PPO"


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
        (["--envs-per-env-runner", "7"], "the lean env runner steps its envs in two halves, so it needs an even number >= 2 (got 7)"),
        (["--envs-per-env-runner", "1"], "needs an even number >= 2 (got 1)"),
        (["--algorithm", "DQN"], "argument --algorithm: invalid choice: 'DQN'"),
        (["--env-runner", "fast"], "argument --env-runner: invalid choice: 'fast'"),
        (["--gpus-per-env-runner", "-1"], "argument --gpus-per-env-runner: invalid non-negative float value: '-1'"),
        (["--frame-size", "16"], "argument --frame-size: must be between 32 and 210 pixels (got 16)"),
        (["--frame-size", "big"], "argument --frame-size: invalid positive int value: 'big'"),
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


def test_pong_samples_with_the_lean_runner_on_the_runners_cpus() -> None:
    from rljob.trainer.recipes.atari_module import FrameStackAPPOModule, FrameStackCatalog, FrameStackPPOModule
    from rljob.trainer.sampling.runner import LeanEnvRunner
    from rljob.trainer.sizing import ResourcePlan

    plan = ResourcePlan(num_env_runners=3, cpus_per_env_runner=4.0, num_learners=1, gpus_per_learner=1)
    config = _config("pong", [], plan)
    assert config.env_runner_cls is LeanEnvRunner
    assert config.env_config["vector_env"] == "rljob.trainer.recipes.atari_env:make_lean_env"
    assert (config.num_env_runners, config.num_cpus_per_env_runner, config.num_envs_per_env_runner) == (3, 4.0, 128)
    # The forward pass on the runner's CPUs: 2 torch threads, and the emulator on the 2 CPUs they leave.
    assert (config.env_config["num_threads"], config.env_config["framestack"], config.env_config["inference_threads"]) == (2, 4, 2)
    on_gpu = _config("pong", [], ResourcePlan(3, 4.0, 1, 0.5, gpus_per_env_runner=0.125))
    assert on_gpu.env_config["num_threads"] == 4  # the forward pass on the GPU share: the emulator has every CPU
    assert _config("pong", [], ResourcePlan(1, 1.0, 1, 0)).env_config["num_threads"] == 1
    light = _config("pong", ["--model", "small"], plan)  # a quarter of the compute: the emulator is the bound
    assert (light.env_config["num_threads"], light.env_config["inference_threads"]) == (4, 2)
    assert config._rl_module_spec.module_class is FrameStackAPPOModule
    assert config._rl_module_spec.catalog_class is FrameStackCatalog
    assert config._learner_connector is None  # no frame stacking on the learner: the stacks arrive whole
    assert (config.train_batch_size_per_learner, config.grad_clip, config.broadcast_interval, config.clip_param) == (
        2000, 10.0, 1, 0.3,
    )
    ppo = _config("pong", ["--algorithm", "PPO", "--envs-per-env-runner", "8"], plan)
    assert type(ppo).__name__ == "PPOConfig" and ppo._rl_module_spec.module_class is FrameStackPPOModule
    assert (ppo.rollout_fragment_length, ppo.num_epochs, ppo.minibatch_size, ppo.clip_param) == ("auto", 4, 256, 0.1)
    assert config.env_config["dim"] == 64 and _config("pong", ["--frame-size", "42"], plan).env_config["dim"] == 42


def test_pong_ppo_on_cpus_learns_in_the_driver_at_the_full_learning_rate() -> None:
    from rljob.trainer.sizing import plan_resources

    plan = plan_resources(2, 0, None, cpus_per_env_runner=2, in_turn=True)
    config = _config("pong", ["--algorithm", "PPO", "--lr", "0.0003"], plan)
    assert (config.num_learners, config.num_env_runners, config.num_envs_per_env_runner, config.lr) == (0, 1, 64, 0.0003)


def test_pong_stock_runner_steps_envs_with_ales_vector_env_or_wrappers() -> None:
    from rljob.trainer.sizing import ResourcePlan

    plan = ResourcePlan(num_env_runners=3, cpus_per_env_runner=4.0, num_learners=1, gpus_per_learner=1)
    config = _config("pong", ["--env-runner", "stock"], plan)
    assert config.env_runner_cls is None and config.gym_env_vectorize_mode == "vector_entry_point"
    assert (config.num_env_runners, config.num_cpus_per_env_runner, config.num_envs_per_env_runner) == (3, 4.0, 8)
    assert config.env_config["num_threads"] == 4 and "framestack" not in config.env_config
    assert config._learner_connector is not None
    sync = _config("pong", ["--env-runner", "stock", "--vectorize", "sync", "--cpus-per-env-runner", "2"], plan)
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


def test_the_one_gpu_example_infers_on_gpu_shares_and_leaves_every_cpu_to_the_emulator() -> None:
    """examples/pong.yaml on its machine (its head's CPUs and GPU, no workers): the CPUs only emulate."""
    from pathlib import Path

    from rljob.api.manifest import load_job_file
    from rljob.api.quantity import parse_quantity
    from rljob.trainer.sizing import default_aggregators, plan_resources

    spec = load_job_file(Path(__file__).resolve().parents[3] / "examples" / "pong.yaml").spec
    assert spec.workers.replicas == 0 and spec.head.gpus == 1
    run = prepare("pong", list(spec.entrypoint.args))
    o = run.options
    plan = plan_resources(float(parse_quantity(spec.head.cpu)), spec.head.gpus, o.num_env_runners, default_aggregators(run.algorithm, 1),
                          o.cpus_per_env_runner, o.gpus_per_env_runner)
    assert (plan.num_env_runners, plan.cpus_per_env_runner, plan.gpus_per_env_runner) == (3, 4, 0.1)
    assert (plan.num_learners, plan.gpus_per_learner) == (1, 0.7) and not plan.notes
    config = run.recipe.build_config(o, plan)
    assert (config.num_gpus_per_env_runner, config.num_gpus_per_learner) == (0.1, 0.7)
    assert (config.env_config["num_threads"], config.num_envs_per_env_runner) == (4, 128)


def test_another_atari_game_is_an_instance_with_pongs_arguments_and_defaults() -> None:
    from rljob.trainer.recipes.atari import AtariRecipe
    from rljob.trainer.recipes.pong import RECIPE as PONG
    from rljob.trainer.sizing import ResourcePlan

    breakout = AtariRecipe("breakout", "ale_py:ALE/Breakout-v5", summary="Atari Breakout.")
    assert isinstance(PONG, AtariRecipe) and breakout.__doc__ == "Atari Breakout."
    options = breakout.parse_args([])
    pong = PONG.parse_args([])
    assert options.env == "ale_py:ALE/Breakout-v5"
    assert {k: v for k, v in vars(options).items() if k != "env"} == {k: v for k, v in vars(pong).items() if k != "env"}
    config = breakout.build_config(options, ResourcePlan(1, 1.0, 1, 0))
    assert config.env_config["env_id"] == "ale_py:ALE/Breakout-v5"
    with pytest.raises(ConfigError, match=r"^recipe breakout: error: argument --envs-per-env-runner"):
        breakout.parse_args(["--envs-per-env-runner", "3"])
    with pytest.raises(ValueError, match="no algorithm 'IMPALA'"):
        AtariRecipe("x", "ale_py:ALE/Pong-v5", summary="x", algorithm="IMPALA")


def test_the_stock_runners_connectors_load_from_where_checkpoints_pickled_them() -> None:
    """Checkpoints of the stock runner saved before AtariRecipe name the connectors' factories in recipes.pong."""
    import pickle

    from rljob.trainer.recipes.atari import frame_stack_env_to_module, frame_stack_learner

    for old, new in (("_frame_stack_env_to_module", frame_stack_env_to_module), ("_frame_stack_learner", frame_stack_learner)):
        assert pickle.loads(f"crljob.trainer.recipes.pong\n{old}\n.".encode()) is new
