"""inference.files: a file or a folder appears whole or not at all, and a failed write leaves
the old content and no temporary file behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from inference.files import move_folder_into_place, write_atomically


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_atomically(target, lambda out: out.write(b"new content"))
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("failure", [ValueError("half written"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_one(
    tmp_path: Path, failure: BaseException
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def write(out) -> None:
        out.write(b"half")
        raise failure

    with pytest.raises(type(failure)):
        write_atomically(target, write)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_new_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "model.yaml"
    write_atomically(target, lambda out: out.write(b"x: 1\n"), mode=0o640)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_text() == "x: 1\n"


def test_a_folder_is_published_in_one_rename_and_never_over_another(tmp_path: Path) -> None:
    staged = tmp_path / ".staged"
    staged.mkdir()
    (staged / "a.txt").write_text("a")
    move_folder_into_place(staged, tmp_path / "v0")
    assert (tmp_path / "v0" / "a.txt").read_text() == "a" and not staged.exists()

    again = tmp_path / ".again"
    again.mkdir()
    (again / "b.txt").write_text("b")
    with pytest.raises(OSError):
        move_folder_into_place(again, tmp_path / "v0")
    assert sorted(p.name for p in (tmp_path / "v0").iterdir()) == ["a.txt"]
