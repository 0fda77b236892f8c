"""Progress records from RLlib results, and the JSON line and status.progress made from them."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rljob.api.models import Progress
from rljob.trainer.progress import (
    ProgressRecord,
    ReturnWindow,
    episodes_in,
    learner_diagnostics,
    progress_wire,
    record_from_result,
)


def result(iteration: int = 3, ret: float | None = -20.5, steps: float = 3000, since: float = 30.0) -> dict:
    runners: dict[str, object] = {"num_env_steps_sampled_lifetime": steps}
    if ret is not None:
        runners["episode_return_mean"] = ret
    return {
        "training_iteration": iteration,
        "num_env_steps_sampled_lifetime": steps,
        "env_runners": runners,
        "time_this_iter_s": 10.0,
        "time_since_restore": since,
        "time_total_s": since,
    }


def test_record_from_result() -> None:
    r = record_from_result(result(), previous_env_steps=2000, time_offset_s=0.0, attempt=2, now=1.0)
    assert (r.iteration, r.episode_return_mean, r.env_steps, r.env_steps_per_second, r.time_total_s) == (
        3, -20.5, 3000, 100.0, 30.0,
    )
    assert r.attempt == 2


def test_resumed_run_adds_earlier_training_time() -> None:
    r = record_from_result(result(since=10.0), previous_env_steps=2500, time_offset_s=120.0, attempt=None)
    assert r.time_total_s == 130.0
    assert r.env_steps_per_second == 50.0


def test_nan_and_missing_return_are_unknown() -> None:
    assert record_from_result(result(ret=None), previous_env_steps=0, time_offset_s=0, attempt=None).episode_return_mean is None
    nan = record_from_result(result(ret=math.nan), previous_env_steps=0, time_offset_s=0, attempt=None)
    assert nan.episode_return_mean is None


def test_env_steps_fall_back_to_env_runner_results() -> None:
    res = result()
    del res["num_env_steps_sampled_lifetime"]
    assert record_from_result(res, previous_env_steps=0, time_offset_s=0, attempt=None).env_steps == 3000


def test_json_line_fields() -> None:
    r = ProgressRecord(4, -19.123456, 4000, 123.456, 40.0, "/ck/iteration-000004", 1, 5.0)
    data = json.loads(r.json_line())
    assert list(data)[:6] == ["iteration", "episode_return_mean", "env_steps", "env_steps_per_second",
                              "time_total_s", "checkpoint"]
    assert data["episode_return_mean"] == -19.1235 and data["env_steps_per_second"] == 123.5
    assert ProgressRecord.from_json(r.json_line()).iteration == 4


def test_progress_wire_is_camel_case_status_progress() -> None:
    r = ProgressRecord(4, -19.5, 4000, 100.0, 40.0, "/ck/iteration-000004", 2, 0.0)
    progress = progress_wire(r)
    assert progress == {
        "attempt": 2,
        "iteration": 4,
        "episodeReturnMean": -19.5,
        "envSteps": 4000,
        "envStepsPerSecond": 100.0,
        "timeTotalSeconds": 40.0,
        "lastCheckpoint": "/ck/iteration-000004",
        "updateTime": "1970-01-01T00:00:00Z",
    }
    # Exactly the API's field names: the operator and kubectl read them through the same model.
    assert Progress.model_validate(progress).wire() == progress


def test_unknown_figures_are_left_out_not_nulled() -> None:
    progress = progress_wire(ProgressRecord(1, None, 0, 0.0, 1.0))
    assert "episodeReturnMean" not in progress and "lastCheckpoint" not in progress


@pytest.mark.parametrize("char", ["a", "\u00e9", "\U0001f3d3"])  # 1, 6 and 12 bytes once json.dumps escapes them
def test_an_overlong_checkpoint_path_keeps_its_tail_within_the_models_bound(char: str) -> None:
    from rljob.api.models import MAX_PATH_LENGTH

    path = "/ck/" + char * 10_000 + "/iteration-000042"
    shown = progress_wire(ProgressRecord(42, 1.0, 10, 1.0, 1.0, path, 1, 0.0))["lastCheckpoint"]
    assert shown.startswith("...") and shown.endswith(char + "/iteration-000042")
    assert len(json.dumps(shown)) - 2 <= MAX_PATH_LENGTH
    assert len(json.dumps(shown)) - 2 > MAX_PATH_LENGTH - 12  # cut at the bound, not far below it
    assert progress_wire(ProgressRecord(42, 1.0, 10, 1.0, 1.0, "/ck/" + "a" * 1000, 1, 0.0))["lastCheckpoint"] == "/ck/" + "a" * 1000


def test_a_figure_the_model_refuses_is_left_out_and_the_rest_is_kept() -> None:
    progress = progress_wire(ProgressRecord(3, 1e12, 300, 10.0, 6.0, None, 0, 0.0))  # return and attempt out of bounds
    assert "episodeReturnMean" not in progress and "attempt" not in progress
    assert progress["iteration"] == 3 and progress["envSteps"] == 300
    assert Progress.model_validate(progress).wire() == progress


def test_return_window_weights_iterations_by_their_episodes() -> None:
    w = ReturnWindow(episodes=10)
    assert w.add(None, 0) is None
    assert w.add(-21.0, 3) == -21.0
    assert w.add(-15.0, 1) == -19.5  # (3 x -21 + -15) / 4: one lucky game moves the mean by its share only
    assert w.add(None, 0) == -19.5  # no game ended: the latest estimate stays


def test_return_window_keeps_the_latest_episodes() -> None:
    w = ReturnWindow(episodes=10)
    w.add(-21.0, 6)
    w.add(-11.0, 6)  # the window holds 4 of the oldest iteration's 6 games and all 6 new ones
    assert w.mean() == (4 * -21.0 + 6 * -11.0) / 10
    w.add(1.0, 12)  # one iteration with more games than the window: only its own mean
    assert w.mean() == 1.0


def test_return_window_counts_a_mean_without_a_count_as_one_episode() -> None:
    w = ReturnWindow(episodes=2)
    w.add(-20.0, 0)
    w.add(-10.0, 0)
    assert w.add(0.0, 0) == -5.0


def test_episodes_in_result() -> None:
    assert episodes_in({"env_runners": {"num_episodes": 7}}) == 7
    assert episodes_in({"env_runners": {}}) == 0
    assert episodes_in({}) == 0
    assert episodes_in({"env_runners": {"num_episodes": math.nan}}) == 0


def rllib_learner_result() -> dict:
    """The shape of RLlib 2.x's (new API stack) result for one PPO iteration, as far as diagnostics go."""
    res = result()
    res["env_runners"]["episode_len_mean"] = np.float64(812.5)
    res["learners"] = {
        "__all_modules__": {"num_env_steps_trained": 1024, "learner_connector_timer": 0.15},
        "default_policy": {
            "entropy": np.float32(1.75),
            "policy_loss": -0.0123,
            "vf_loss": 0.04,
            "vf_explained_var": math.nan,
            "mean_kl_loss": 0.002,
            "gradients_default_optimizer_global_norm": 0.4,
            "default_optimizer_learning_rate": 0.00025,
            "curr_entropy_coeff": 0.01,
            "num_trainable_parameters": 1_000_000,
        },
    }
    return res


def test_learner_diagnostics_from_an_rllib_result() -> None:
    d = learner_diagnostics(rllib_learner_result())
    assert d == {
        "episode_len_mean": 812.5, "entropy": 1.75, "policy_loss": -0.0123, "vf_loss": 0.04,
        "grad_norm": 0.4, "learning_rate": 0.00025, "entropy_coeff": 0.01,
    }  # nan (no variance yet) is left out, and so are totals and counts
    assert all(type(v) is float for v in d.values())  # numpy scalars would not serialize
    r = record_from_result(rllib_learner_result(), previous_env_steps=0, time_offset_s=0, attempt=None)
    assert r.learner == d
    assert learner_diagnostics(result()) == {}


def test_other_modules_keep_their_names_apart() -> None:
    res = rllib_learner_result()
    res["learners"]["opponent"] = {"entropy": 0.5}
    d = learner_diagnostics(res)
    assert d["entropy"] == 1.75 and d["opponent/entropy"] == 0.5


def test_learner_diagnostics_travel_in_the_json_line() -> None:
    r = record_from_result(rllib_learner_result(), previous_env_steps=0, time_offset_s=0, attempt=None)
    back = ProgressRecord.from_json(r.json_line())
    assert back.learner["entropy"] == pytest.approx(1.75) and back.learner["episode_len_mean"] == 812.5
    old = json.dumps({"iteration": 1, "episode_return_mean": None, "env_steps": 0, "env_steps_per_second": 0.0,
                      "time_total_s": 1.0})  # a progress.jsonl written before the diagnostics existed
    assert ProgressRecord.from_json(old).learner == {}


def test_tensorboard_files_hold_the_learner_diagnostics(tmp_path: Path) -> None:
    from tensorboardX.proto import event_pb2

    from rljob.trainer.sinks import Outcome, TensorBoardSink

    sink = TensorBoardSink(tmp_path)
    sink.record(record_from_result(rllib_learner_result(), previous_env_steps=0, time_offset_s=0, attempt=None))
    sink.close(Outcome(0, "done"))
    tags: dict[str, float] = {}
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        at = 0
        while at < len(data):  # TFRecord: length, its crc, the event, its crc
            length = int.from_bytes(data[at:at + 8], "little")
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            tags.update({v.tag: v.simple_value for v in event.summary.value})
    assert tags["learner/entropy"] == pytest.approx(1.75) and tags["learner/episode_len_mean"] == 812.5
    assert "rljob/episode_return_mean" in tags and "learner/vf_explained_var" not in tags


def test_iteration_timers_are_this_iterations_sums_from_the_runner_and_learners() -> None:
    res = result()
    res["env_runners"]["rljob_sample_s"] = 2.25
    res["learners"] = {"__all_modules__": {"rljob_learn_s": 3.5, "rljob_value_pass_s": 0.25},
                       "default_policy": {"entropy": 1.7}}
    res["timers"] = {"learner_update_timer": 99.0}  # RLlib's moving averages are not these
    r = record_from_result(res, previous_env_steps=0, time_offset_s=0.0, attempt=None)
    assert r.timers == {"sample_s": 2.25, "learn_s": 3.5, "value_pass_s": 0.25, "iteration_s": 10.0}
    assert json.loads(r.json_line())["timers"] == r.timers
    assert ProgressRecord.from_json(r.json_line()).timers == r.timers


def test_missing_or_bad_timers_are_left_out() -> None:
    from rljob.trainer.timers import iteration_timers, split_text

    assert iteration_timers({}, None) == {}
    res = {"env_runners": {"rljob_sample_s": math.nan}, "learners": {"__all_modules__": {"rljob_learn_s": -1.0}}}
    assert iteration_timers(res, 4.0) == {"iteration_s": 4.0}
    assert split_text({"iteration_s": 10.0, "learn_s": 5.5, "sample_s": 3.0, "value_pass_s": 0.5}) == \
        "learn 55% value pass 5% sample 30%"
    assert split_text({"learn_s": 5.5}) == ""  # no iteration time, no shares


def test_the_evaluation_travels_in_status_progress() -> None:
    summary = {"games": 20, "mean_return": 18.25, "std_return": 1.5, "min_return": 14.0, "max_return": 21.0,
               "wins": 20, "losses": 0, "cut_off": 0, "seed": 0, "iteration": 120}
    wire = progress_wire(ProgressRecord(120, 18.0, 10, 1.0, 2.0, timestamp=5.0, evaluation=summary))
    assert wire["evaluation"] == {"games": 20, "meanReturn": 18.25, "stdReturn": 1.5, "minReturn": 14.0,
                                  "maxReturn": 21.0, "wins": 20, "losses": 0, "cutOff": 0, "seed": 0, "iteration": 120}
    assert Progress.model_validate(wire).evaluation is not None
    assert "evaluation" not in progress_wire(ProgressRecord(1, None, 0, 0.0, 1.0, timestamp=5.0))
