"""Small parts of the node: the worker's environment, the SCP's contexts, the spool, the loops."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from pynetdicom import AllStoragePresentationContexts

from node.config.settings import Settings, load_settings
from node.dicom.scp import TRANSFER_SYNTAXES, build_ae
from node.dicom.spool import Spool
from node.serve.embedded_worker import settings_environment
from node.serve.loops import PeriodicLoop
from node.serve.runtime import assembly_interval


def test_the_embedded_worker_gets_exactly_the_parents_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = load_settings(
        data_dir=tmp_path,
        allowed_callers="PACS@10.0.0.1,CR1",
        quiet_seconds=2.5,
        pacs="PACS@10.0.0.1:104",
        ris="ris.local:2575",
        ris_tls=True,
        max_associations=3,
        hl7_allowed_facilities="RADRIS,CARDIO",
        http="off",  # None, where the default is on: the child must not turn it back on
    )
    for name in list(os.environ):
        if name.startswith("ECHO_"):
            monkeypatch.delenv(name)
    for name, value in settings_environment(parent).items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.model_dump() == {**parent.model_dump(), "data_dir": tmp_path.resolve(),
                                  "database_url": parent.effective_database_url,
                                  "broker_url": parent.effective_broker_url}  # fmt: skip
    assert (child.effective_database_url, child.effective_broker_url) == (
        parent.effective_database_url,
        parent.effective_broker_url,
    )


def test_every_storage_sop_class_is_accepted_with_every_listed_syntax() -> None:
    ae = build_ae(Settings())
    supported = {context.abstract_syntax: context.transfer_syntax for context in ae.supported_contexts}
    assert len(AllStoragePresentationContexts) >= 150
    for context in AllStoragePresentationContexts:
        assert supported[context.abstract_syntax] == list(TRANSFER_SYNTAXES)
    assert "1.2.840.10008.1.1" in supported  # Verification (C-ECHO)
    assert {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.1.99",
    } <= set(TRANSFER_SYNTAXES)


def test_stale_temp_files_are_removed_and_stored_files_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    stored = spool.path_for("1.2", "1.2.3", "1.2.3.4")
    spool.write(stored, b"DICM")
    leftover = stored.parent / ".incoming-abc.part"
    leftover.write_bytes(b"half")
    assert spool.remove_stale_temp_files() == 1
    assert not leftover.exists() and stored.read_bytes() == b"DICM"
    assert Spool(tmp_path / "missing").remove_stale_temp_files() == 0


def test_a_failing_tick_does_not_stop_its_loop() -> None:
    calls: list[int] = []
    third = threading.Event()

    def tick() -> None:
        calls.append(1)
        if len(calls) == 3:
            third.set()
        raise RuntimeError("database is locked")

    loop = PeriodicLoop("test", 0.01, tick)
    loop.start()
    assert third.wait(5)
    loop.stop()
    stopped_at = len(calls)
    threading.Event().wait(0.05)
    assert len(calls) == stopped_at


@pytest.mark.parametrize(("quiet", "interval"), [(10.0, 1.0), (2.0, 0.5), (0.5, 0.125), (0.0, 0.05)])
def test_assembly_sweeps_often_enough_for_the_quiet_period(quiet: float, interval: float) -> None:
    assert assembly_interval(quiet) == interval


@pytest.mark.parametrize(("retention_days", "has_loop"), [(None, False), (30.0, True)])
def test_the_node_runs_the_retention_loop_only_when_retention_is_set(
    start_node, make_settings, retention_days, has_loop
) -> None:
    node = start_node(make_settings(retention_days=retention_days))
    assert ("retention" in {loop.name for loop in node._loops}) is has_loop


def test_a_streamed_file_on_another_file_system_is_copied_in_durably(tmp_path: Path, monkeypatch) -> None:
    from node.dicom import spool as spool_module

    spool = Spool(tmp_path / "spool")
    source = tmp_path / "incoming.dcm"
    source.write_bytes(b"DICM" * 1000)
    target = spool.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    real_replace, calls = os.replace, []

    def cross_device_first(src, dst):
        calls.append((src, dst))
        if len(calls) == 1:  # the plain rename of the streamed file: another file system
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(spool_module.os, "replace", cross_device_first)
    spool.move_into(target, source)

    assert target.read_bytes() == b"DICM" * 1000
    assert not source.exists() and len(calls) == 2, "copied to a temp file, then renamed into place"
    assert [path.name for path in target.parent.iterdir()] == [target.name], "no temp file left"
