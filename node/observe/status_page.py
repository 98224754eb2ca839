"""The read-only status page (`/status`): what the node did lately, rendered on the server as HTML.

One short database session reads a `StatusSnapshot` (`status_queries`), the plots are drawn as
inline SVG (`charts`), and a Jinja2 template (`templates/status.html`, autoescaped) lays it out:
no JavaScript, nothing to build, readable in any browser and as a screenshot. The page refreshes
itself every 30 seconds (a meta refresh).

`render()` never raises: a database that cannot be read gives a 503 page saying so, and any other
error a 500 page naming it, so that the listener keeps serving /metrics and the probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from http import HTTPStatus

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from node.observe import charts
from node.observe.status_queries import read_snapshot
from node.store.models import utcnow
from node.store.states import DeliveryStatus, StudyState

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30


@dataclass(frozen=True)
class Rendered:
    status: HTTPStatus
    html: str


class StatusPage:
    """Renders the page for one node. `clock` and `zone` are for tests: the page shows times in the
    server's local time zone."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        node_name: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        zone: tzinfo | None = None,
    ):
        self._sessions = sessions
        self._node_name = node_name
        self._clock = clock
        self._zone = zone or datetime.now().astimezone().tzinfo or UTC
        self._templates = _environment(self._zone)

    def render(self) -> Rendered:
        now = self._clock()
        try:
            with self._sessions() as session:
                snapshot = read_snapshot(session, now)
        except SQLAlchemyError as error:
            log.warning("status page: the database cannot be read: %s", type(error).__name__)
            return self._problem(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the database cannot be read ({type(error).__name__}); the page comes back when it does",
                now,
            )
        except Exception as error:  # noqa: BLE001 - the listener must keep serving
            log.exception("status page: reading the node's state failed")
            return self._problem(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}", now)
        try:
            html = self._templates.get_template("status.html").render(
                node=self._node_name,
                s=snapshot,
                refresh=REFRESH_SECONDS,
                zone=_zone_name(self._zone, now),
                latency_svg=charts.latency_chart(snapshot.activity, self._zone),
                drafts_svg=charts.drafts_chart(snapshot.activity, self._zone),
                agreement_svg=charts.agreement_chart(snapshot.quality_by_week),
                states=list(StudyState),
                delivery_statuses=list(DeliveryStatus),
            )
        except Exception as error:  # noqa: BLE001 - the listener must keep serving
            log.exception("status page: rendering failed")
            return self._problem(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}", now)
        return Rendered(HTTPStatus.OK, html)

    def _problem(self, status: HTTPStatus, reason: str, now: datetime) -> Rendered:
        html = self._templates.get_template("problem.html").render(
            node=self._node_name,
            status=status,
            reason=reason,
            now=now,
            refresh=REFRESH_SECONDS,
            zone=_zone_name(self._zone, now),
        )
        return Rendered(status, html)


def _environment(zone: tzinfo) -> Environment:
    environment = Environment(
        loader=PackageLoader("node.observe", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["clock"] = lambda moment, now: clock_time(moment, now, zone)
    environment.filters["duration"] = duration
    environment.filters["age"] = age
    return environment


def clock_time(moment: datetime | None, now: datetime, zone: tzinfo) -> str:
    """'14:03:22' in the page's time zone, with the day when it is not the day of `now`."""
    if moment is None:
        return "–"
    local = moment.astimezone(zone)
    return local.strftime("%H:%M:%S" if local.date() == now.astimezone(zone).date() else "%d %b %H:%M")


def duration(seconds: float | None) -> str:
    """'8.4 s', '3 min 05 s', '2 h 10 min', '3 d 4 h'; '–' when there is none."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def age(moment: datetime | None, now: datetime) -> str:
    return "–" if moment is None else duration(max((now - moment) / timedelta(seconds=1), 0.0))


def _zone_name(zone: tzinfo, now: datetime) -> str:
    return now.astimezone(zone).tzname() or "local time"
