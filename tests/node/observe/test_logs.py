"""ECHO_LOG_FORMAT=json: one JSON object per line, with the study's ids while it is worked on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from node.config.logs import configure_logging, study_context


class JsonLogs:
    """The root logger set up as `configure_logging("DEBUG", "json")` does, and what it wrote."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def start(self) -> None:
        """Called in the test itself: pytest swaps stderr between a test's phases."""
        configure_logging("DEBUG", "json")

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.capsys.readouterr().err.splitlines()]


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[JsonLogs]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield JsonLogs(capsys)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_line_logged_while_a_study_is_worked_on_carries_its_ids(json_logs) -> None:
    json_logs.start()
    log = logging.getLogger("echo.test")
    log.info("before")
    with study_context(12):
        log.info("drafting %s", "now")
        with study_context(report_id=7, delivery_id=3):
            log.warning("sending")
    log.info("after")

    before, drafting, sending, after = json_logs.lines()
    assert set(before) == {"time", "level", "logger", "message"}
    assert (before["level"], before["logger"], before["message"]) == ("INFO", "echo.test", "before")
    assert str(before["time"]).endswith("+00:00")
    assert (drafting["message"], drafting["study_id"]) == ("drafting now", 12)
    assert "report_id" not in drafting
    assert (sending["study_id"], sending["report_id"], sending["delivery_id"]) == (12, 7, 3)
    assert "study_id" not in after


def test_a_traceback_and_a_multiline_message_stay_on_one_line(json_logs) -> None:
    json_logs.start()
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("echo.test").exception("first\nsecond")
    [entry] = json_logs.lines()
    assert entry["message"] == "first\nsecond"
    assert "ValueError: bad value" in str(entry["exception"])


def test_configuring_again_replaces_the_handler_instead_of_adding_one(json_logs) -> None:
    json_logs.start()
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if getattr(handler, "echo_handler", False)]
    configure_logging("WARNING", "text")
    again = [handler for handler in root.handlers if getattr(handler, "echo_handler", False)]
    assert len(ours) == len(again) == 1 and ours != again
    assert root.level == logging.WARNING
    with pytest.raises(ValueError, match="log format 'xml' is not one of text, json"):
        configure_logging("INFO", "xml")
