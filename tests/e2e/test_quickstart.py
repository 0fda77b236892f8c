"""End to end on a real node: README.md's quickstart block, command by command, exactly as a user types it.

The block (after the `quickstart` marker in README.md) is read from the README itself, so the section cannot drift
from what works: apply the example, wait for Complete, look at the job, fetch its checkpoint, play it here. It runs
in a scratch folder (the example reached through a link, as from the clone's root) with a kubeconfig whose context
names the test's namespace, and `kubectl` and `rljob` first on PATH. Only the cluster's set-up lines above the block
(kind, image loading, helm) are this suite's own: its node and its chart installation stand in for them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import cluster as e2e
from tests.e2e.jobs import diagnostics
from tests.e2e.target import ROOT, tool

MARKER = "<!-- quickstart: the e2e tests run this block -->"


def quickstart_commands(readme: str) -> list[str]:
    """The commands of the fenced block right after the marker, one per line, comments and blank lines dropped."""
    after = readme.split(MARKER, 1)
    assert len(after) == 2, f"README.md has no {MARKER!r}"
    m = re.match(r"\s*```(?:bash|sh)\n(.*?)\n```", after[1], re.S)
    assert m, "the quickstart marker is not followed by a bash block"
    return [line.strip() for line in m.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_readme_block_names_the_day_of_a_job() -> None:
    """The block covers the day the README promises: apply, wait, look, fetch, play."""
    commands = quickstart_commands((ROOT / "README.md").read_text())
    words = [c.split()[:2] for c in commands]
    assert [w for w in words if w[0] in ("kubectl", "rljob")] == words, commands
    assert ["kubectl", "apply"] in words and ["kubectl", "wait"] in words, commands
    assert ["rljob", "fetch"] in words and ["rljob", "play"] in words, commands


@pytest.mark.timeout(1800)
def test_the_readme_quickstart_runs_as_written(
    cluster: e2e.Cluster, namespace: str, checkpoint_volumes: None, tmp_path: Path
) -> None:
    commands = quickstart_commands((ROOT / "README.md").read_text())
    work = tmp_path / "clone"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copyfile(cluster.kubeconfig, kubeconfig)
    cluster.kubectl("config", "set-context", "--current", f"--namespace={namespace}", f"--kubeconfig={kubeconfig}")
    bins = tmp_path / "bin"
    bins.mkdir()
    (bins / "kubectl").symlink_to(tool("kubectl"))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           "PATH": os.pathsep.join([str(bins), str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=1800)
        outputs.append(f"$ {command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        if done.returncode != 0:
            pytest.fail(f"{command!r} exited {done.returncode}:\n" + "\n".join(outputs) + "\n" + diagnostics(cluster, namespace))
    transcript = "\n".join(outputs)
    fetched = [p for p in work.iterdir() if p.is_dir() and p.name != "examples"]
    assert len(fetched) == 1 and any(fetched[0].glob("iteration-*/rljob.json")), transcript
    assert "mean return" in outputs[-1] and "Succeeded" in transcript, transcript
    cluster.kubectl("delete", "rltj", "--all", "-n", namespace, "--wait=false")
