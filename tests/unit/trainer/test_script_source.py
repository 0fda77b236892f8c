"""Script entrypoints: finding the script, and unpacking `rljob submit`'s source archive."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from rljob.api.constants import SOURCE_ARCHIVE_KEY
from rljob.trainer.errors import ConfigError
from rljob.trainer.script import resolve_script, script_command, script_env, unpack_source


def make_archive(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_resolve_relative_and_absolute(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    assert resolve_script("train.py", tmp_path) == tmp_path / "train.py"
    assert resolve_script(str(tmp_path / "train.py"), Path("/nowhere")) == tmp_path / "train.py"
    with pytest.raises(ConfigError, match=r"'other.py' not found \(looked in"):
        resolve_script("other.py", tmp_path)


def test_plain_source_dir_is_used_as_it_is(tmp_path: Path) -> None:
    assert unpack_source(tmp_path, tmp_path / "dest") == tmp_path


def test_archive_is_unpacked_beside_the_other_keys(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    make_archive(source / SOURCE_ARCHIVE_KEY, {"pkg/train.py": b"print(1)", "data/w.bin": b"\x00\x01"})
    (source / "config.yaml").write_text("a: 1")
    dest = unpack_source(source, tmp_path / "unpacked")
    assert (dest / "pkg" / "train.py").read_bytes() == b"print(1)"
    assert (dest / "data" / "w.bin").read_bytes() == b"\x00\x01"
    assert (dest / "config.yaml").read_text() == "a: 1"
    assert not (dest / SOURCE_ARCHIVE_KEY).exists()


def test_unsafe_or_broken_archive_is_a_config_error(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    make_archive(source / SOURCE_ARCHIVE_KEY, {"../escape.py": b"x"})
    with pytest.raises(ConfigError, match="cannot unpack"):
        unpack_source(source, tmp_path / "unpacked")
    assert not (tmp_path / "escape.py").exists()
    (source / SOURCE_ARCHIVE_KEY).write_bytes(b"not a tarball")
    with pytest.raises(ConfigError, match="cannot unpack"):
        unpack_source(source, tmp_path / "unpacked")


def test_command_and_env() -> None:
    assert script_command(Path("/s/t.py"), ["--x", "1"], python="/py") == ["/py", "/s/t.py", "--x", "1"]
    env = script_env({"A": "1"}, "10.0.0.1:6379")
    assert env["RAY_ADDRESS"] == "10.0.0.1:6379" and env["A"] == "1"
