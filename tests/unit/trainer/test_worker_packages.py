"""Workers read their pip requirements from the variable the operator sets."""
from __future__ import annotations

import json

import pytest

from rljob import resources
from rljob.api import constants as c
from rljob.api import parse_job
from rljob.trainer.errors import TrainerError
from rljob.trainer.pod import worker_packages
from tests.builders import minimal_job


def test_round_trip_from_the_statefulset_builder() -> None:
    job = parse_job(minimal_job(pipPackages=["numpy<3", "einops"], network={"allowInternetEgress": True}))
    env = {e["name"]: e["value"] for e in resources.workers_statefulset(job, resources.BuildContext())["spec"]["template"]["spec"]
           ["containers"][0]["env"] if "value" in e}
    assert worker_packages(env) == ["numpy<3", "einops"]


def test_absent_and_malformed() -> None:
    assert worker_packages({}) == []
    with pytest.raises(TrainerError, match=c.ENV_PIP_PACKAGES):
        worker_packages({c.ENV_PIP_PACKAGES: json.dumps({"not": "a list"})})
