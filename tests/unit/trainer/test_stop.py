"""Stop criteria and the display's ETA."""
from __future__ import annotations

from rljob.trainer.progress import ProgressRecord
from rljob.trainer.stop import StopCriteria, eta_seconds


def rec(iteration: int, ret: float | None, steps: int, rate: float = 100.0, t: float | None = None) -> ProgressRecord:
    return ProgressRecord(iteration, ret, steps, rate, float(iteration * 10) if t is None else t)


def test_each_criterion_names_its_reason() -> None:
    c = StopCriteria(episode_return_mean=18, env_steps=1000, iterations=10, total_seconds=500)
    assert c.reached(rec(1, 17.9, 10), 1, 1.0) is None
    assert "episode return mean 18.00 reached 18" in (c.reached(rec(1, 18.0, 10), 1, 1.0) or "")
    assert "env steps 1000" in (c.reached(rec(1, None, 1000), 1, 1.0) or "")
    assert "iteration 10 reached 10" in (c.reached(rec(10, None, 10), 1, 1.0) or "")
    assert c.reached(rec(2, None, 10, t=500.0), 1, 1.0) is None  # the run budget is a limit, not a goal
    assert c.over_budget(rec(2, None, 10, t=499.0)) is None
    assert "DeadlineExceeded" in (c.over_budget(rec(2, None, 10, t=500.0)) or "")


def test_only_rljob_run_applies_the_run_budget_in_the_cluster_the_operator_does() -> None:
    from rljob.api.models import JobSpec

    spec = JobSpec.model_validate({"entrypoint": {"recipe": "pong"}, "maxRunDurationSeconds": 60})
    assert StopCriteria.build(spec, None).total_seconds is None
    assert StopCriteria.build(spec, None, owns_run_budget=True).total_seconds == 60


def test_run_limits_count_this_invocation_only() -> None:
    c = StopCriteria(run_iterations=2, run_seconds=30)
    assert c.reached(rec(12, None, 10), 1, 5.0) is None  # iteration 12 overall, first of this run
    assert "--max-iterations" in (c.reached(rec(13, None, 10), 2, 5.0) or "")
    assert "--max-duration" in (c.reached(rec(13, None, 10), 1, 30.0) or "")


def test_no_return_yet_never_meets_the_return_goal() -> None:
    assert StopCriteria(episode_return_mean=-100).reached(rec(1, None, 10), 1, 1.0) is None


def test_eta_takes_the_nearest_criterion() -> None:
    history = [rec(i, None, i * 1000, rate=100.0) for i in range(1, 4)]
    c = StopCriteria(env_steps=13_000, iterations=100)
    assert eta_seconds(c, history, 3, 30.0) == 100.0  # 10,000 steps left at 100/s, before 97 iterations x 10 s


def test_eta_from_an_improving_return() -> None:
    history = [rec(i, -21.0 + i, i * 100) for i in range(1, 6)]  # +1 per 10 s
    eta = eta_seconds(StopCriteria(episode_return_mean=0.0), history, 5, 50.0)
    assert eta is not None and abs(eta - 160.0) < 1e-6


def test_eta_unknown_without_history_or_goal() -> None:
    assert eta_seconds(StopCriteria(env_steps=10), [], 0, 0.0) is None
    assert eta_seconds(StopCriteria(), [rec(1, 0.0, 10)], 1, 1.0) is None


def test_describe() -> None:
    assert StopCriteria().describe() == "none (runs until interrupted)"
    assert StopCriteria(episode_return_mean=18, run_iterations=2).describe() == "return >= 18, 2 iterations in this run"
