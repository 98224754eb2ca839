"""The spool's durability at the cost of one fsync per new file (`node.dicom.spool.Placed.sync`)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from node.dicom import spool as spool_module
from node.dicom.spool import Spool


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files fsynced, in order (by name; folders would show up as folders)."""
    calls: list[str] = []
    real = os.fsync

    def counting(descriptor: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    monkeypatch.setattr(spool_module.os, "fsync", counting)
    return calls


def test_a_new_file_costs_one_fsync_of_itself_after_its_rename(tmp_path: Path, fsyncs: list[str]) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")  # new study and series folders too
    placed = spool.write(path, b"DICM" * 100)
    assert fsyncs == [] and placed.new  # renamed into place; its fsync comes next
    placed.sync()
    assert fsyncs == [str(path)]
    assert path.read_bytes() == b"DICM" * 100
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_streamed_file_moved_in_costs_one_fsync(tmp_path: Path, fsyncs: list[str]) -> None:
    spool = Spool(tmp_path / "spool")
    source = tmp_path / "spool" / ".incoming" / "streamed.part"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"DICM" * 100)
    path = spool.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    spool.move_into(path, source).sync()
    assert fsyncs == [str(path)] and not source.exists()


def test_a_file_replacing_an_earlier_copy_is_complete_before_the_rename(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    spool.write(path, b"first").sync()
    fsyncs.clear()
    placed = spool.write(path, b"second")
    assert not placed.new
    placed.sync()
    [before_rename, after_rename] = fsyncs
    assert Path(before_rename).name.startswith(".incoming-") and after_rename == str(path)
    assert path.read_bytes() == b"second"


def test_a_new_file_whose_fsync_fails_is_not_left_under_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "fsync", disk_full)
    placed = spool.write(path, b"DICM")
    with pytest.raises(OSError, match="No space left"):
        placed.sync()
    assert list(path.parent.iterdir()) == []


def test_stored_files_skips_series_folders_unchanged_since(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    old, new = spool.path_for("1.1", "1.1.1", "1.1.1.1"), spool.path_for("1.2", "1.2.1", "1.2.1.1")
    for path in (old, new):
        spool.write(path, b"DICM")
    (spool.root / ".incoming").mkdir()
    (spool.root / ".incoming" / "x.dcm").write_bytes(b"not stored yet")
    for item in (old, old.parent):
        os.utime(item, (1_000_000, 1_000_000))
    assert sorted(path for path, _ in spool.stored_files()) == sorted([old, new])
    assert [path for path, _ in spool.stored_files(changed_since=2_000_000)] == [new]
