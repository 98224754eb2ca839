"""What an association costs the SCP: threads that wait for work instead of polling (`node.dicom.reactor`),
presentation contexts shared with the server instead of deep-copied (`node.dicom.server.SharedContexts`)."""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from types import SimpleNamespace

import pytest

from node.dicom import reactor
from node.serve.runtime import Node

pytestmark = pytest.mark.integration


def the_association(node: Node):
    assert node.server is not None
    deadline = time.monotonic() + 5  # an earlier association may still be ending
    while len(node.server.active_associations) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    [assoc] = node.server.active_associations
    return assoc


def count_calls(owner: object, name: str) -> list[int]:
    """Count calls of `owner.name` (an instance attribute from then on)."""
    calls = [0]
    original = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    return calls


def test_an_idle_association_wakes_its_threads_a_few_times_a_second_not_a_thousand(
    scu, start_node, make_settings, dicom
) -> None:
    node = start_node(make_settings())
    association = scu.associate(node.settings)
    assert association.is_established
    try:
        assoc = the_association(node)
        assert isinstance(assoc._reactor_checkpoint, reactor._Checkpoint)
        dul_passes = count_calls(assoc.dul, "_process_recv_primitive")
        reactor_passes = count_calls(assoc._reactor_checkpoint, "wait")
        time.sleep(1.0)
        idle = (dul_passes[0], reactor_passes[0])
        # pynetdicom alone: ~1,000 passes a second each; waiting for work: one per IDLE_WAIT_S
        assert idle[0] < 3 / reactor.IDLE_WAIT_S and idle[1] < 3 / reactor.IDLE_WAIT_S, idle
        # pynetdicom's own sockets leave Nagle's algorithm on: its data PDU would wait for our ACK
        association.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        statuses = [association.send_c_store(dicom.chest_image()).Status for _ in range(20)]
        assert statuses == [0x0000] * 20
        assert time.perf_counter() - started < 20 * reactor.IDLE_WAIT_S, "a message waited for the timeout"
    finally:
        association.release()


def test_a_pynetdicom_that_does_not_fit_is_left_polling_and_logged_once(caplog) -> None:
    misfit = SimpleNamespace(dul=SimpleNamespace(), dimse=SimpleNamespace())
    reactor._warned.clear()
    with caplog.at_level(logging.WARNING, logger="node.dicom.reactor"):
        assert reactor.make_event_driven(misfit) is False  # type: ignore[arg-type]
        assert reactor.make_event_driven(misfit) is False  # type: ignore[arg-type]
    assert caplog.text.count("associations poll") == 1


def test_associations_share_the_servers_presentation_contexts(scu, start_node, make_settings) -> None:
    node = start_node(make_settings())
    assert node.server is not None
    first, second = scu.associate(node.settings), scu.associate(node.settings)
    try:
        assert first.is_established and second.is_established
        assert first.send_c_echo().Status == second.send_c_echo().Status == 0x0000
        for assoc in node.server.active_associations:
            contexts = assoc.acceptor.supported_contexts
            assert len(contexts) == len(node.server.contexts) > 100
            assert all(a is b for a, b in zip(contexts, node.server.contexts, strict=True)), "copied"
    finally:
        first.release()
        second.release()


def test_pynetdicom_narrates_each_message_only_when_its_logger_prints_it(
    scu, start_node, make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynetdicom import _config, evt
    from pynetdicom._handlers import standard_pdu_recv_handler

    from node.dicom.scp import narrate_only_if_logged

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", _config.LOG_HANDLER_LEVEL)  # restored afterwards
    pynetdicom_log = logging.getLogger("pynetdicom")
    level = pynetdicom_log.level

    def narrating() -> bool:
        association = scu.associate(node.settings)
        try:
            handlers = the_association(node).get_handlers(evt.EVT_PDU_RECV)
            return any(handler[0] is standard_pdu_recv_handler for handler in handlers)
        finally:
            association.release()

    try:
        pynetdicom_log.setLevel(logging.WARNING)  # as the node's logging keeps it below DEBUG
        node = start_node(make_settings())
        assert narrating() is False
        pynetdicom_log.setLevel(logging.DEBUG)
        narrate_only_if_logged()
        assert narrating() is True
    finally:
        pynetdicom_log.setLevel(level)


def test_associations_leave_no_descriptors_open_behind_them(scu, start_node, make_settings, wait_for) -> None:
    node = start_node(make_settings())
    open_descriptors = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = open_descriptors()
    gc.disable()  # closed with their threads, not whenever a garbage collection comes by
    try:
        for _ in range(30):
            association = scu.associate(node.settings)
            assert association.send_c_echo().Status == 0x0000
            association.release()
        assert node.server is not None
        wait_for(lambda: not node.server.active_associations, what="the associations' threads to end")
        assert open_descriptors() <= before + 3, (before, open_descriptors())
    finally:
        gc.enable()
