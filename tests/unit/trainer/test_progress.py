"""Progress records from RLlib results, and the JSON line and status patch made from them."""
from __future__ import annotations

import json
import math

from rljob.api.models import Progress
from rljob.trainer.progress import ProgressRecord, ReturnWindow, episodes_in, record_from_result, status_patch


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


def test_status_patch_is_camel_case_progress() -> None:
    r = ProgressRecord(4, -19.5, 4000, 100.0, 40.0, "/ck/iteration-000004", 2, 0.0)
    patch = status_patch(r)
    progress = patch["status"]["progress"]
    assert set(patch) == {"status"} and set(patch["status"]) == {"progress"}
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
    progress = status_patch(ProgressRecord(1, None, 0, 0.0, 1.0))["status"]["progress"]
    assert "episodeReturnMean" not in progress and "lastCheckpoint" not in progress


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
