"""pynetdicom's two loops per association, made to wait for work instead of polling every millisecond.

Each pynetdicom association runs two threads that poll: the DUL reactor (socket in, PDUs out) sleeps
1 ms whenever a pass found nothing to do, and the association reactor sleeps 1 ms before every pass
over its queues. Every message so waits up to a millisecond at each hand-over, and an open idle
association wakes its two threads ~2,000 times a second; with several senders those wake-ups take
the interpreter lock from the threads doing the work. pynetdicom has no setting for this.

`make_event_driven(assoc)`, called for each association the server creates before its threads start,
changes that association's own objects only (nothing process-wide):

- its queues wake the thread that reads them when something is put in them;
- the DUL thread, when a pass has nothing to do, waits in ``select`` on its socket and a wake-up
  socket (pynetdicom calls ``_process_recv_primitive`` once per pass: the wait is put in front of it);
- the association thread waits on ``_reactor_checkpoint`` once per pass (pynetdicom's pause switch,
  a `threading.Event`): `_Checkpoint` keeps that meaning and also waits there for work.

Both waits are bounded (`IDLE_WAIT_S`), so what pynetdicom checks on each pass (timers, a thread that
died, a kill flag nothing woke us for) is still seen, a little later. Once the connection is over
(the DUL back in Sta1, where pynetdicom's ``stop_dul`` sets its flag without a wake-up), the DUL polls
as pynetdicom does until it is stopped; its wake-up pair is closed when its thread ends. If pynetdicom's internals are
not as expected, the association is left to poll as before (logged once).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.05  # the longest either thread waits without a reason to wake
_REQUIRED = {
    "dul": (
        "run",
        "_process_recv_primitive",
        "to_provider_queue",
        "event_queue",
        "to_user_queue",
        "kill_dul",
        "socket",
    ),
    "dimse": ("msg_queue",),
    "assoc": ("_reactor_checkpoint", "_kill"),
}
_warned = threading.Event()


class _Waker:
    """A socket pair: a byte written to one end wakes a ``select`` on the other."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self.writer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        """Idempotent; a wake-up after it is a no-op (its OSError is swallowed)."""
        self.reader.close()
        self.writer.close()


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls `wake` after each put (pynetdicom's queues are plain `queue.Queue`s)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._wake()


def _waking(old: queue.Queue[Any], wake: Callable[[], None]) -> _WakingQueue:
    """`old`'s replacement, holding what was in it (the socket's Evt5 is queued already)."""
    new = _WakingQueue(wake)
    with old.mutex:
        new.queue.extend(old.queue)
    return new


class _Checkpoint:
    """Stands in for ``Association._reactor_checkpoint`` (set: the reactor runs; clear: paused).

    `wait` keeps the Event's meaning (block while cleared) and then waits until the association has
    something to do, or `IDLE_WAIT_S`.
    """

    def __init__(self, has_work: Callable[[], bool]) -> None:
        self._running = threading.Event()
        self._running.set()
        self._woken = threading.Event()
        self._has_work = has_work

    def set(self) -> None:
        self._running.set()
        self._woken.set()

    def clear(self) -> None:
        self._running.clear()

    def is_set(self) -> bool:
        return self._running.is_set()

    def wake(self) -> None:
        self._woken.set()

    def wait(self, timeout: float | None = None) -> bool:
        running = self._running.wait(timeout)
        self._woken.clear()  # a put after this line sets it again: no wake-up is lost
        if running and not self._has_work():
            self._woken.wait(IDLE_WAIT_S)
        return running


def _has_attributes(assoc: Association) -> bool:
    owners = {"dul": assoc.dul, "dimse": assoc.dimse, "assoc": assoc}
    return all(hasattr(owners[owner], name) for owner, names in _REQUIRED.items() for name in names)


def make_event_driven(assoc: Association) -> bool:
    """Make `assoc`'s two threads wait for work (see the module); False if pynetdicom does not fit."""
    if not _has_attributes(assoc):
        if not _warned.is_set():
            _warned.set()
            log.warning("this pynetdicom version does not fit node.dicom.reactor: associations poll")
        return False
    dul, dimse = assoc.dul, assoc.dimse
    waker = _Waker()
    weakref.finalize(dul, waker.close)  # a DUL that never ran

    def has_work() -> bool:
        return bool(dimse.msg_queue.qsize() or dul.to_user_queue.qsize() or assoc._kill or not dul.is_alive())

    checkpoint = _Checkpoint(has_work)
    assoc._reactor_checkpoint = checkpoint  # type: ignore[assignment]
    dimse.msg_queue = _waking(dimse.msg_queue, checkpoint.wake)
    dul.to_user_queue = _waking(dul.to_user_queue, checkpoint.wake)

    def wake_dul() -> None:
        if threading.current_thread() is not dul:  # the DUL's own puts: it is not waiting
            waker.wake()

    dul.to_provider_queue = _waking(dul.to_provider_queue, wake_dul)
    dul.event_queue = _waking(dul.event_queue, wake_dul)
    process_recv_primitive = dul._process_recv_primitive
    kill_dul = dul.kill_dul

    def wait_then_process_recv_primitive() -> bool:
        # In Sta1 (no connection: before it, or once it is over) the DUL waits only to be stopped, and
        # pynetdicom's `stop_dul` sets its flag without a wake-up: there pynetdicom's own polls are left.
        busy = dul.to_provider_queue.qsize() or dul.event_queue.qsize()
        if not busy and dul.state_machine.current_state != "Sta1":
            _wait_for_input(dul.socket, waker)
        return process_recv_primitive()

    run = dul.run

    def run_then_close() -> None:  # the pair's descriptors go with the thread, not with the garbage
        try:
            run()
        finally:
            waker.close()

    def kill_and_wake() -> None:
        kill_dul()
        waker.wake()

    dul._process_recv_primitive = wait_then_process_recv_primitive  # type: ignore[method-assign]
    dul.kill_dul = kill_and_wake  # type: ignore[method-assign]
    dul.run = run_then_close  # type: ignore[method-assign]
    return True


def _wait_for_input(sock: Any, waker: _Waker) -> None:
    """Until the peer sent something, something was queued for the DUL, or `IDLE_WAIT_S`."""
    raw = getattr(sock, "socket", None)
    try:
        if raw is None or raw.fileno() == -1:
            select.select([waker.reader], [], [], IDLE_WAIT_S)  # closed: only a queued event or a kill
        elif not sock.ready:  # `ready` also counts bytes TLS has decrypted already
            select.select([raw, waker.reader], [], [], IDLE_WAIT_S)
    except (OSError, ValueError):  # closed under us: pynetdicom's own pass finds out
        return
    waker.drain()
