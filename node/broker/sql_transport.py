"""The embedded broker's transport: kombu's SQLAlchemy transport, woken by a publish instead of polling.

Same tables, same messages, same guarantees as `sqla+sqlite://`: this subclass only changes how a
consumer waits for the next message. kombu sleeps a fixed second between empty polls; here the
consumer waits on its wake-up socket (`node.broker.wakeup`) for at most that second, and every
publish through this transport wakes it as soon as its message is committed. A study's task is
picked up in milliseconds instead of half a second on average, and an idle node polls no more
often than before.

Celery selects it by class (`broker_transport`) with the URL stripped of its `sqla+` prefix
(`node.broker.app`); only a SQLite file has a folder for the sockets, any other database polls.
The `polling_interval` transport option works here (kombu's SQL channel would hand it to
create_engine, which refuses it).
"""

from __future__ import annotations

from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import sqlalchemy as kombu_sql
from sqlalchemy import Engine, create_engine, make_url

from node.broker.wakeup import Listener, WakeUps, wake_folder


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


# Transport options that are not create_engine's (kombu's SQL channel hands it every other one).
TRANSPORT_OWN = frozenset(
    {
        "polling_interval",  # the virtual transport's; kombu's SQL channel forgets to hold it back
        "queue_tablename",
        "message_tablename",
        "callback",
        "errback",
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "retry_errors",
    }
)


class Channel(kombu_sql.Channel):
    def _engine_from_config(self) -> Engine:
        client = self.connection.client
        options = {k: v for k, v in client.transport_options.items() if k not in TRANSPORT_OWN}
        return create_engine(client.hostname, **options)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        super()._put(queue, payload, **kwargs)  # committed: a woken consumer finds it
        wake_ups = self.connection.wake_ups
        if wake_ups is not None:
            wake_ups.notify()


class Transport(kombu_sql.Transport):
    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        database = sqlite_file(client.hostname)
        self.wake_ups: WakeUps | None = WakeUps(wake_folder(database)) if database else None
        self._listener: Listener | None = None
        self._listening = False  # a listener was asked for (None after that: polling only)

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """kombu's loop (one message delivered, or socket.timeout) with the sleep replaced by a wait
        on our wake-up socket, bound before the first look so no publish can slip in between."""
        listener = self._wake_listener()
        if listener is None:
            super().drain_events(connection, timeout)
            return
        started = monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                wait = self.polling_interval
                if timeout is not None:
                    left = timeout - (monotonic() - started)
                    if left <= 0:
                        raise TimeoutError from None  # socket.timeout, what kombu raises
                    wait = min(wait, left)
                listener.wait(wait)

    def close_connection(self, connection: Any) -> None:
        try:
            super().close_connection(connection)
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            self._listening = False
            if self.wake_ups is not None:
                self.wake_ups.close()

    def _wake_listener(self) -> Listener | None:
        if not self._listening and self.wake_ups is not None:
            self._listening = True
            self._listener = self.wake_ups.listener()
        return self._listener
