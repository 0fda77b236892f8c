"""The AlgorithmConfig each recipe builds, pinned field by field: a refactoring of the recipes must not change it.

The learning results in benchmarks/README.md hold for the configs the example manifests build; any change to
a built field (a default, a branch taken for an algorithm, a sizing decision) would silently make them stale.
Each case is sized as its entry point sizes it (the pod driver on the manifest's cluster, `rljob run` on a
2-core machine), and every field whose value differs from the algorithm's own default is compared with
recipe_configs.json. Classes and functions are compared by identity after importing the path recorded there,
so a class may move if its recorded path still imports it: the path old checkpoints pickled.

After an intended change, regenerate the file and review its diff:
    .venv/bin/python tests/unit/trainer/test_recipe_configs.py --write
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from rljob.api.manifest import load_job_file
from rljob.api.models import JobSpec
from rljob.api.quantity import parse_quantity
from rljob.trainer.cluster import ClusterSummary
from rljob.trainer.recipes import prepare
from rljob.trainer.sizing import learns_in_turn, local_env_runners
from rljob.trainer.stop import StopCriteria
from rljob.trainer.training import TrainingRun, plan_for

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).with_name("recipe_configs.json")
LOCAL_CORES = 2  # the laptop of examples/pong-local.yaml and benchmarks/README.md


@dataclasses.dataclass(frozen=True)
class Case:
    """A recipe run: an example manifest's, or the recipe's args on a cluster of the given size."""

    example: str | None = None
    recipe: str = "pong"
    args: tuple[str, ...] = ()
    cpus: float = 0.0
    gpus: float = 0.0
    local: bool = False  # sized as `rljob run` sizes it on a LOCAL_CORES machine


CASES = {
    "pong-local": Case(example="pong-local.yaml", local=True),
    "pong": Case(example="pong.yaml"),
    "pong-cpu-workers": Case(example="pong-cpu-workers.yaml"),
    "pong-local-on-a-gpu": Case(example="pong-local.yaml", cpus=8, gpus=1),
    "pong-defaults-on-cpus": Case(cpus=4),
    "pong-stock-appo": Case(args=("--env-runner", "stock", "--entropy-decay-steps", "1000"), cpus=16, gpus=1),
    "pong-stock-ppo-sync": Case(args=("--algorithm", "PPO", "--env-runner", "stock", "--vectorize", "sync"), cpus=4),
    "cartpole": Case(recipe="cartpole", cpus=4),
}


def build(case: Case) -> Any:
    """The config the entry point would build for this case, sized by the same functions."""
    if case.example is not None:
        spec = load_job_file(REPO / "examples" / case.example).spec
        recipe, args = spec.entrypoint.recipe or "", list(spec.entrypoint.args)
    else:
        spec = JobSpec.model_validate({"entrypoint": {"recipe": case.recipe}})
        recipe, args = case.recipe, list(case.args)
    run = prepare(recipe, args)
    default_runners = None
    if case.local:
        cluster = ClusterSummary(1, 0, LOCAL_CORES, 0.0, LOCAL_CORES)
        default_runners, _ = local_env_runners(
            spec.workers.replicas, spec.workers.cpu, spec.head.cpu, LOCAL_CORES, run.options.cpus_per_env_runner,
            learns_in_turn(run.algorithm, 0),
        )
    elif case.cpus:
        cluster = ClusterSummary(1, 0, case.cpus, case.gpus, case.cpus)
    else:  # the manifest's pods: the head's CPUs and GPUs and every worker's CPUs
        cpus = float(parse_quantity(spec.head.cpu)) + spec.workers.replicas * float(parse_quantity(spec.workers.cpu))
        cluster = ClusterSummary(1 + spec.workers.replicas, spec.workers.replicas, cpus, spec.head.gpus,
                                 float(parse_quantity(spec.head.cpu)))
    training = TrainingRun(job="guard", attempt=None, spec=spec, recipe_run=run,
                           criteria=StopCriteria.build(spec, run.options), checkpoint_dir=Path("unused"),
                           default_env_runners=default_runners)
    return run.recipe.build_config(run.options, plan_for(training, cluster))


def ref(value: Any) -> str:
    return f"{value.__module__}:{value.__qualname__}"


def resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


def encode(value: Any) -> Any:
    """JSON that tells apart what the config holds: tuples from lists, classes and functions by import path."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value), value
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, functools.partial):
        return {"__partial__": ref(value.func), "args": encode(value.args), "keywords": encode(value.keywords)}
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return {"__ref__": ref(value)}
    if dataclasses.is_dataclass(value):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": ref(type(value)), "fields": fields}
    text = repr(value)
    assert " at 0x" not in text, f"no stable form for {text}"
    return {"__repr__": text}


def snapshot(config: Any) -> dict[str, Any]:
    """The config's class and every field that differs from that class's defaults."""
    built, defaults = encode(config.to_dict()), encode(type(config)().to_dict())
    fields = {k: v for k, v in built.items() if k not in defaults or defaults[k] != v}
    return {"config_class": ref(type(config)), "fields": fields}


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where `actual` differs from `expected`; a recorded import path matches whatever object it still imports."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for marker in ("__ref__", "__dataclass__", "__partial__"):
            if marker in expected and marker in actual:
                if resolve(expected[marker]) is not resolve(actual[marker]):
                    return [f"{where}: {actual[marker]} is not {expected[marker]}"]
                expected = {k: v for k, v in expected.items() if k != marker}
                actual = {k: v for k, v in actual.items() if k != marker}
        found = [f"{where}.{k}: missing" for k in expected if k not in actual]
        found += [f"{where}.{k}: not expected ({actual[k]!r})" for k in actual if k not in expected]
        for k in expected.keys() & actual.keys():
            found += differences(expected[k], actual[k], f"{where}.{k}")
        return found
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in differences(e, a, f"{where}[{i}]")]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {actual!r} instead of {expected!r}"]
    return []


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_built_config_is_the_recorded_one(name: str) -> None:
    recorded = json.loads(GOLDEN.read_text())[name]
    assert differences(recorded, snapshot(build(CASES[name]))) == []


def test_every_recorded_case_is_still_built() -> None:
    assert sorted(json.loads(GOLDEN.read_text())) == sorted(CASES)


def test_the_comparison_notices_a_changed_field_and_a_moved_class() -> None:
    recorded = snapshot(build(CASES["pong"]))
    changed = json.loads(json.dumps(recorded))
    changed["fields"]["clip_param"] = 0.2
    changed["fields"]["_learner_class"] = {"__ref__": "rljob.trainer.sizing:ResourcePlan"}
    found = differences(changed, recorded)
    assert any(".fields.clip_param: 0.3 instead of 0.2" in d for d in found)
    assert any(".fields._learner_class:" in d for d in found)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {sys.argv[0]} --write  (records the configs built now in {GOLDEN.name})")
    GOLDEN.write_text(json.dumps({name: snapshot(build(case)) for name, case in sorted(CASES.items())}, indent=1) + "\n")
