"""The operator's previous release, from git, for the upgrade test: its chart, its CRD and its operator image,
built from that commit's own tree with that commit's own `hack/images.sh` (the offline build, as the tests' images).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.cluster import docker_image_id
from tests.e2e.target import ROOT

#: The release before this one. hack/release.sh publishes a version's images and chart without a git tag, so the
#: release is named by its commit: the last state of main that passed CI before the current work.
PREVIOUS_RELEASE = "dc869f7a77ff1e0cc05de9e625f65506b14cc156"


@dataclass(frozen=True)
class Release:
    commit: str
    tree: Path

    @property
    def chart(self) -> Path:
        return self.tree / "charts" / "rljob"

    @property
    def crds(self) -> Path:
        return self.tree / "crds"

    @property
    def tag(self) -> str:
        return f"prev-{self.commit[:12]}"

    @property
    def operator_image(self) -> str:
        return f"rljob/operator:{self.tag}"


def in_history(commit: str) -> bool:
    """Whether this clone has the commit (a shallow clone may not)."""
    res = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    return res.returncode == 0


def checkout(commit: str, workdir: Path) -> Release:
    """The commit's files (git archive: no working tree of this clone is touched) and its operator image, tagged
    `rljob/operator:prev-<commit>` so that it never replaces this checkout's."""
    tree = workdir / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
    assert archive.wait() == 0, f"git archive {commit} failed"
    release = Release(commit, tree)
    if docker_image_id(release.operator_image) is not None:
        # The tag names the commit, so a present image is that release's build. It is not rebuilt: that release's
        # hack/images.sh checks the wheel cache against its own requirements and downloads again when this
        # checkout's differ, and the upgrade test runs in the e2e node's network namespace, which reaches no index.
        return release
    env = {**os.environ, "IMAGE_BASE": "debootstrap", "TAG": release.tag, "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    res = subprocess.run(["bash", str(tree / "hack" / "images.sh"), "operator"], capture_output=True, text=True,
                         env=env, timeout=1800)  # fmt: skip
    assert res.returncode == 0, f"building the operator image of {commit} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return release


def main() -> int:
    """`python -m tests.e2e.releases`: the previous release's operator image, built before the tests (make
    e2e-prepare, where the package index is reachable) so that the upgrade test's time covers the test alone."""
    if not in_history(PREVIOUS_RELEASE):
        print(f"releases: this clone lacks {PREVIOUS_RELEASE} (a shallow clone?); the upgrade test will say so")
        return 0
    with tempfile.TemporaryDirectory(prefix="rljob-previous-") as tmp:
        release = checkout(PREVIOUS_RELEASE, Path(tmp))
    print(f"releases: {release.operator_image} ready, built from {PREVIOUS_RELEASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
