"""How every process logs: plain text lines, or one JSON object per line (ECHO_LOG_FORMAT=json).

A JSON line holds `time` (UTC, ISO 8601), `level`, `logger`, `message` and, while a study is being
worked on, the node's own ids of it: `study_id`, `report_id`, `delivery_id` (`exception` when there
is a traceback). The ids come from `study_context`, a context variable set around the per-study work
(an inference task, one outbox send), so every record logged inside it carries them, from whichever
module, without passing them down. Only the node's ids: never a patient's name, id or accession.

Lives in node.config, below every package that logs a study (node.delivery, worker).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
STUDY_IDS = ("study_id", "report_id", "delivery_id")

_ids: ContextVar[Mapping[str, int]] = ContextVar("echo_log_ids", default=MappingProxyType({}))


@contextmanager
def study_context(
    study_id: int | None = None, *, report_id: int | None = None, delivery_id: int | None = None
) -> Iterator[None]:
    """Every record logged inside carries these ids (the ones given; an outer context's stay)."""
    given = {"study_id": study_id, "report_id": report_id, "delivery_id": delivery_id}
    token = _ids.set(MappingProxyType({**_ids.get(), **{k: v for k, v in given.items() if v is not None}}))
    try:
        yield
    finally:
        _ids.reset(token)


class StudyIds(logging.Filter):
    """Copies the current `study_context` ids onto each record (a handler filter: propagated records
    from every logger pass through it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _ids.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in STUDY_IDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class AlembicPreamble(logging.Filter):
    """Drops what alembic says before every migration run ("Context impl SQLiteImpl.", "Will assume
    non-transactional DDL."); what a migration changes ("Running upgrade ...") is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


def configure_logging(level: str, log_format: str = "text") -> None:
    """The root logger writes to stderr in `log_format` at `level`; calling again replaces what an
    earlier call installed (a CLI may set JSON before it knows its level)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "echo_handler", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.echo_handler = True  # type: ignore[attr-defined] - ours, so a later call replaces it
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(StudyIds())
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors unless debugging.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING if level != "DEBUG" else logging.NOTSET)
    # pydicom's validation warnings quote the offending value, which may be a patient's name or id:
    # route Python warnings into logging and keep both quiet at every level.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    # alembic 1.18+ logs a line per autogenerate plugin at import, and its preamble to each migration.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, AlembicPreamble) for f in migration.filters):
        migration.addFilter(AlembicPreamble())
