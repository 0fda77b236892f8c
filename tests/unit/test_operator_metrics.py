"""The operator's histograms count what happened while the process ran, never a restart's backlog again; its
endpoint serves what rljob.api.metrics defines, from the jobs it is given at scrape time."""
from __future__ import annotations

from prometheus_client import REGISTRY

from rljob.api import JobStatus
from rljob.controller.metrics import OperatorMetrics


def _count(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"{name}_count", labels) or 0.0


def finished(name: str, completed: str, ready: str) -> JobStatus:
    """The status of job `name` once it finished (the name says which job a test means, as the key does)."""
    return JobStatus.model_validate({
        "phase": "Succeeded", "startTime": "2026-12-01T10:00:00Z", "attemptStartTime": "2026-12-01T10:00:00Z",
        "clusterReadyTime": ready, "completionTime": completed})


def running(name: str) -> JobStatus:
    return JobStatus.model_validate({
        "phase": "Running", "startTime": "2026-12-01T10:00:00Z", "attemptStartTime": "2026-12-01T10:00:00Z"})


def test_jobs_finished_before_this_process_saw_them_are_not_counted_again() -> None:
    metrics = OperatorMetrics(jobs=list)
    done, ready = _count(metrics, "rljob_job_duration_seconds", phase="Succeeded"), _count(metrics, "rljob_cluster_ready_seconds")
    # A restart finds a job that finished earlier (an hour ago, or in this very second): in status, but counted
    # by the process that saw it happen.
    old = finished("old", "2026-12-01T11:00:00Z", "2026-12-01T10:01:00Z")
    for _ in range(3):
        metrics.observe_reconcile(("ns", "old"), old, old, 0.01, False)
    assert _count(metrics, "rljob_job_duration_seconds", phase="Succeeded") == done
    assert _count(metrics, "rljob_cluster_ready_seconds") == ready
    # One this process saw running and then finish is counted, once, however often it is reconciled.
    metrics.observe_reconcile(("ns", "new"), running("new"), running("new"), 0.01, False)
    new = finished("new", "2026-12-01T12:00:00Z", "2026-12-01T10:00:30Z")
    for _ in range(3):
        metrics.observe_reconcile(("ns", "new"), new, new, 0.01, False)
    assert _count(metrics, "rljob_job_duration_seconds", phase="Succeeded") == done + 1
    assert _count(metrics, "rljob_cluster_ready_seconds") == ready + 1
    # One whose pods finished while no operator ran is finished by this process's first reconcile: counted.
    metrics.observe_reconcile(("ns", "meanwhile"), running("meanwhile"),
                              finished("meanwhile", "2026-12-01T12:00:05Z", "2026-12-01T10:00:30Z"), 0.01, False)
    assert _count(metrics, "rljob_job_duration_seconds", phase="Succeeded") == done + 2
    # A deleted job is forgotten: a new one of the same name is counted afresh.
    metrics.forget_job(("ns", "new"))
    metrics.observe_reconcile(("ns", "new"), running("new"), new, 0.01, False)
    assert _count(metrics, "rljob_job_duration_seconds", phase="Succeeded") == done + 3


def test_two_operators_count_apart() -> None:
    """Nothing is process-wide: what one counted (a test's operator, say) is not in another's series."""
    one, other = OperatorMetrics(jobs=list), OperatorMetrics(jobs=list)
    one.observe_reconcile(("ns", "a"), running("a"), finished("a", "2026-12-01T12:00:00Z", "2026-12-01T10:00:30Z"),
                          0.01, True)
    assert _count(one, "rljob_job_duration_seconds", phase="Succeeded") == 1
    assert one.registry.get_sample_value("rljob_reconcile_errors_total") == 1
    assert _count(other, "rljob_job_duration_seconds", phase="Succeeded") == 0
    assert other.registry.get_sample_value("rljob_reconcile_errors_total") == 0


def test_the_endpoint_serves_the_process_series_prometheus_clients_default_registry_holds() -> None:
    standard = ("process_", "python_")
    served = {f.name for f in OperatorMetrics(jobs=list).registry.collect() if f.name.startswith(standard)}
    assert served and served == {f.name for f in REGISTRY.collect() if f.name.startswith(standard)}


def test_the_operator_exports_what_rljob_api_metrics_defines_for_it() -> None:
    """Every job the operator knows has an info series (experiment, phase) before its driver reports, and the
    progress it reads from status comes out under the driver's names, counters as counters."""
    from rljob.api import metrics as m

    jobs = {
        ("ns", "fresh"): {"spec": {"experiment": "sweep", "workers": {"replicas": 2}}},
        ("ns", "busy"): {"spec": {"experiment": "sweep", "workers": {"replicas": 3}}, "status": {
            "phase": "Running", "attempts": 2, "readyWorkers": 3,
            "progress": {"iteration": 7, "envSteps": 7000, "timeTotalSeconds": 70.5, "episodeReturnMean": -19.5,
                         "envStepsPerSecond": 100.0}}},
        # Written by someone else: the phase no operator writes, a figure out of range. What reads is exported.
        ("ns", "odd"): {"spec": {"experiment": "sweep", "workers": {"replicas": 1}}, "status": {
            "phase": "Paused", "attempts": 1, "progress": {"iteration": -1}}},
    }
    metrics = OperatorMetrics(jobs=jobs.items, progress_reads=lambda: (5, 1))
    families = list(metrics.registry.collect())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    assert samples[("rljob_job_info", (("experiment", "sweep"), ("namespace", "ns"), ("phase", "Pending"),
                                       ("rltrainingjob", "fresh")))] == 1
    assert samples[("rljob_job_info", (("experiment", "sweep"), ("namespace", "ns"), ("phase", "Running"),
                                       ("rltrainingjob", "busy")))] == 1
    busy = (("namespace", "ns"), ("rltrainingjob", "busy"))
    assert samples[("rljob_job_training_iterations_total", busy)] == 7
    assert samples[("rljob_job_env_steps_total", busy)] == 7000
    assert samples[("rljob_job_training_seconds_total", busy)] == 70.5
    assert samples[("rljob_job_episode_return_mean", busy)] == -19.5
    assert samples[("rljob_job_attempt", busy)] == 2
    assert samples[("rljob_job_ready_workers", busy)] == 3
    assert samples[("rljob_job_desired_workers", busy)] == 3
    assert samples[("rljob_jobs", (("phase", "Running"),))] == 1
    odd = (("namespace", "ns"), ("rltrainingjob", "odd"))
    assert samples[("rljob_jobs", (("phase", "Paused"),))] == 1 and samples[("rljob_job_attempt", odd)] == 1
    assert ("rljob_job_training_iterations_total", odd) not in samples
    assert ("rljob_job_training_iterations_total", (("namespace", "ns"), ("rltrainingjob", "fresh"))) not in samples
    assert samples[("rljob_progress_reads_total", (("result", "ok"),))] == 4
    assert samples[("rljob_progress_reads_total", (("result", "failed"),))] == 1

    emitted = {(f.name, f.type) for f in families if f.name.startswith("rljob_")}
    defined = {(d.name, str(d.kind)) for d in m.exported_by(m.Source.OPERATOR)}
    assert emitted == defined


def test_the_readme_documents_every_metric_as_defined() -> None:
    from pathlib import Path

    from rljob.api import metrics as m

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert m.markdown_table() in readme, "README.md's metrics table is out of date: paste rljob.api.metrics.markdown_table()"
