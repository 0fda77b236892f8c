"""The shared training loop with a stand-in algorithm: cadence, stop, resume, signals, failing sinks."""
from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from rljob.api.models import CheckpointSpec, JobSpec
from rljob.trainer import checkpoints
from rljob.trainer.cluster import ClusterSummary
from rljob.trainer.errors import ConfigError
from rljob.trainer.interrupts import StopRequest
from rljob.trainer.progress import ProgressRecord
from rljob.trainer.recipes import RecipeRun
from rljob.trainer.sinks import JsonLinesSink, MetricsSink, Outcome, Sink, Sinks, TerminationMessageSink
from rljob.trainer.sizing import ResourcePlan
from rljob.trainer.stop import StopCriteria
from rljob.trainer.training import TrainingRun, run_training


class FakeAlgo:
    """Counts iterations and env steps the way RLlib reports them; checkpoints are JSON files."""

    def __init__(self, on_train: Any = None) -> None:
        self.iteration, self.steps, self.since_restore = 0, 0, 0.0
        self.on_train = on_train
        self.stopped = False

    def train(self) -> dict[str, Any]:
        self.iteration += 1
        self.steps += 100
        self.since_restore += 2.0
        if self.on_train:
            self.on_train(self.iteration)
        return {
            "training_iteration": self.iteration,
            "num_env_steps_sampled_lifetime": self.steps,
            "env_runners": {"episode_return_mean": -21.0 + self.iteration},
            "time_this_iter_s": 2.0,
            "time_since_restore": self.since_restore,
        }

    def save_to_path(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "state.json").write_text(json.dumps({"iteration": self.iteration, "steps": self.steps}))

    def restore_from_path(self, path: str) -> None:
        state = json.loads((Path(path) / "state.json").read_text())
        self.iteration, self.steps = state["iteration"], state["steps"]

    def stop(self) -> None:
        self.stopped = True


class FakeConfig:
    def __init__(self, algo: FakeAlgo) -> None:
        self.algo = algo

    def validate(self) -> None:
        return None

    def build_algo(self) -> FakeAlgo:
        return self.algo


class FakeRecipe:
    name = "pong"
    algorithm = "APPO"

    def __init__(self, algo: FakeAlgo) -> None:
        self.algo = algo
        self.plan: ResourcePlan | None = None

    def parse_args(self, args: Any) -> argparse.Namespace:
        raise NotImplementedError

    def preflight(self, options: argparse.Namespace) -> None:
        return None

    def build_config(self, options: argparse.Namespace, plan: ResourcePlan) -> Any:
        self.plan = plan
        return FakeConfig(self.algo)


class Collect(Sink):
    def __init__(self) -> None:
        self.records: list[ProgressRecord] = []
        self.outcome: Outcome | None = None

    def record(self, record: ProgressRecord) -> None:
        self.records.append(record)

    def close(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Broken(Sink):
    def record(self, record: ProgressRecord) -> None:
        raise OSError("disk full")


CLUSTER = ClusterSummary(nodes=2, workers=1, cpus=6, gpus=0)


def options(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(num_env_runners=None, num_aggregators=None, cpus_per_env_runner=None, **kw)


def make_run(
    tmp_path: Path, algo: FakeAlgo, criteria: StopCriteria, every: int | None = 2, attempt: int = 1, seconds: int = 3600
) -> tuple[TrainingRun, FakeRecipe]:
    recipe = FakeRecipe(algo)
    policy: dict[str, Any] = {"everySeconds": seconds, "keep": 2}
    if every is not None:
        policy["everyIterations"] = every
    spec = JobSpec.model_validate({"entrypoint": {"recipe": "pong"}, "checkpoint": policy})
    run = TrainingRun("job", attempt, spec, RecipeRun(recipe, options()), criteria, tmp_path / "ck")
    return run, recipe


def test_trains_until_a_criterion_checkpointing_on_cadence_and_at_the_end(tmp_path: Path) -> None:
    algo = FakeAlgo()
    run, recipe = make_run(tmp_path, algo, StopCriteria(iterations=5))
    sink = Collect()
    outcome = run_training(run, CLUSTER, Sinks([Broken(), sink]), StopRequest())
    assert outcome.exit_code == 0 and "iteration 5 reached 5" in outcome.reason
    assert [r.iteration for r in sink.records] == [1, 2, 3, 4, 5]
    assert [r.checkpoint and Path(r.checkpoint).name for r in sink.records] == [
        None, "iteration-000002", "iteration-000002", "iteration-000004", "iteration-000005",
    ]
    assert [c.iteration for c in checkpoints.list_checkpoints(tmp_path / "ck")] == [4, 5]  # keep=2
    assert sink.records[2].env_steps_per_second == 50.0
    assert recipe.plan is not None and recipe.plan.num_env_runners == 5  # 6 CPUs, one for the learner
    assert algo.stopped


def test_checkpoints_by_training_time(tmp_path: Path) -> None:
    """Short iterations must not mean a checkpoint every few seconds: by default one every 300 s of training."""
    now = [0.0]

    def clock() -> float:
        now[0] += 40.0  # each call is 40 s later: iterations of about two calls
        return now[0]

    run, _ = make_run(tmp_path, FakeAlgo(), StopCriteria(iterations=8), every=None, seconds=200)
    sink = Collect()
    run_training(run, CLUSTER, Sinks([sink]), StopRequest(), clock=clock)
    saved = sorted({Path(r.checkpoint).name for r in sink.records if r.checkpoint})
    assert saved == ["iteration-000003", "iteration-000006", "iteration-000008"]  # 200 s apart, and the end
    assert CheckpointSpec().every_seconds == 300 and CheckpointSpec().every_iterations is None


def test_resume_continues_counts_and_time(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path, FakeAlgo(), StopCriteria(iterations=3))
    run_training(run, CLUSTER, Sinks([]), StopRequest())
    run2, _ = make_run(tmp_path, FakeAlgo(), StopCriteria(iterations=5), attempt=2)
    sink = Collect()
    run_training(run2, CLUSTER, Sinks([sink]), StopRequest())
    first = sink.records[0]
    assert (first.iteration, first.env_steps, first.attempt) == (4, 400, 2)
    assert first.time_total_s == 8.0  # 6 s in attempt 1 + 2 s
    assert first.env_steps_per_second == 50.0


def test_resume_refuses_another_recipes_checkpoint(tmp_path: Path) -> None:
    checkpoints.save(FakeAlgo().save_to_path, tmp_path / "ck", ProgressRecord(1, None, 1, 1.0, 1.0), "cartpole")
    run, _ = make_run(tmp_path, FakeAlgo(), StopCriteria(iterations=3))
    with pytest.raises(ConfigError, match="checkpoint of recipe 'cartpole'"):
        run_training(run, CLUSTER, Sinks([]), StopRequest())


def test_signal_finishes_the_iteration_and_saves(tmp_path: Path) -> None:
    stop = StopRequest()

    def on_train(iteration: int) -> None:
        if iteration == 3:
            stop.signum = signal.SIGTERM

    run, _ = make_run(tmp_path, FakeAlgo(on_train), StopCriteria(), every=100)
    sink = Collect()
    outcome = run_training(run, CLUSTER, Sinks([sink]), stop)
    assert outcome.exit_code == 143 and outcome.reason == "interrupted"
    assert [r.iteration for r in sink.records] == [1, 2, 3]
    assert outcome.checkpoint is not None and outcome.checkpoint.endswith("iteration-000003")
    assert sink.outcome is not None and sink.outcome.last is not None
    assert sink.outcome.last.checkpoint == outcome.checkpoint


def test_keyboard_interrupt_mid_iteration_saves_the_last_completed_one(tmp_path: Path) -> None:
    def on_train(iteration: int) -> None:
        if iteration == 3:
            raise KeyboardInterrupt

    stop = StopRequest()
    stop.signum = None
    run, _ = make_run(tmp_path, FakeAlgo(on_train), StopCriteria(), every=100)
    outcome = run_training(run, CLUSTER, Sinks([]), stop)
    assert outcome.exit_code == 130
    assert outcome.checkpoint is not None and outcome.checkpoint.endswith("iteration-000002")


def test_sinks_report_the_final_checkpoint(tmp_path: Path) -> None:
    from rljob.trainer.metrics import ProgressCollector

    collector = ProgressCollector("job", "ns", "pong")
    termination = TerminationMessageSink(tmp_path / "termination-log")
    metrics = MetricsSink(collector)
    jsonl = JsonLinesSink(path=tmp_path / "p" / "progress.jsonl")
    sinks = Sinks([termination, metrics, jsonl])
    rec = ProgressRecord(3, None, 300, 10.0, 6.0, None)
    sinks.record(rec)
    assert "lastCheckpoint" not in json.loads((tmp_path / "termination-log").read_text())["progress"]
    final = rec.with_checkpoint("/ck/iteration-000003")
    sinks.close(Outcome(130, "interrupted", final, final.checkpoint))
    assert json.loads((tmp_path / "termination-log").read_text())["progress"]["lastCheckpoint"] == "/ck/iteration-000003"
    assert collector.checkpoint_iteration == 3
    assert len((tmp_path / "p" / "progress.jsonl").read_text().splitlines()) == 1


def test_return_is_the_mean_of_the_latest_games_so_one_lucky_game_does_not_stop_the_run(tmp_path: Path) -> None:
    """Each iteration ends a few games; the stop criterion looks at the latest 100, as RLlib's smoothing does."""

    class Games(FakeAlgo):
        def train(self) -> dict[str, Any]:
            result = super().train()
            lucky = self.iteration == 3
            result["env_runners"] = {"episode_return_mean": 19.0 if lucky else -21.0, "num_episodes": 1 if lucky else 4}
            return result

    run, _ = make_run(tmp_path, Games(), StopCriteria(iterations=4, episode_return_mean=18.0))
    sink = Collect()
    outcome = run_training(run, CLUSTER, Sinks([sink]), StopRequest())
    assert "iteration 4 reached 4" in outcome.reason
    assert [r.episode_return_mean for r in sink.records] == [-21.0, -21.0, (8 * -21.0 + 19.0) / 9, (12 * -21.0 + 19.0) / 13]


def test_the_run_budget_ends_rljob_run_as_deadline_exceeded_with_a_checkpoint(tmp_path: Path) -> None:
    from rljob.api.constants import EXIT_DEADLINE_EXCEEDED

    run, _ = make_run(tmp_path, FakeAlgo(), StopCriteria(total_seconds=5.0), every=None)
    sink = Collect()
    outcome = run_training(run, CLUSTER, Sinks([sink]), StopRequest())
    assert outcome.exit_code == EXIT_DEADLINE_EXCEEDED and "DeadlineExceeded" in outcome.reason
    assert [r.iteration for r in sink.records] == [1, 2, 3]  # 2 s each: 6 s >= 5 s
    assert outcome.checkpoint and Path(outcome.checkpoint).name == "iteration-000003"
