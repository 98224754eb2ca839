"""Suite-wide: how the suite splits over pytest-xdist workers, and the tiny random export that
several folders share.

Under `-n N` (two workers by default, see [tool.pytest.ini_options]) xdist hands out the tests by
scope, a scope running whole on one worker, one test after another (pytest_xdist_make_scheduler):

- "services": every module that talks to the machine's shared services (PostgreSQL, Redis,
  Orthanc, the FHIR server) and everything in tests/e2e and tests/faults (node processes; Redis
  flushed, Redis and PostgreSQL faults). They run serially, as in a run without xdist, so no two of
  them ever meet on a database, a Redis database, a Celery queue, a peer or a port;
- every other test module is a scope of its own, so its module-scoped fixtures are built once.

The fault suite's ledger table (tests/faults/conftest.py) is printed by the process that runs the
tests; under xdist the rows travel to the controller in the reports' user_properties and are
printed here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

TESTS = Path(__file__).resolve().parent
SERVICE_FOLDERS = ("e2e", "faults")
# Names that mean a module talks to a shared service (or builds the URL of one).
SERVICE_WORDS = re.compile(r"redis|postgres|psycopg|orthanc|fhir_server|6379|5432", re.IGNORECASE)
SERVICES = "services"
FAULT_LEDGER = "fault_ledger"

_module_uses_services: dict[Path, bool] = {}


def _uses_services(module: Path) -> bool:
    relative = module.relative_to(TESTS) if module.is_relative_to(TESTS) else module
    if relative.parts and relative.parts[0] in SERVICE_FOLDERS:
        return True
    if module not in _module_uses_services:
        text = module.read_text(errors="replace") if module.is_file() else ""
        _module_uses_services[module] = bool(SERVICE_WORDS.search(text))
    return _module_uses_services[module]


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) without it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist's loadscope scheduling with one scope for every test on shared services, one per
    module for the rest. (Not xdist_group marks: with pytest 9.2, pytest-xdist 3.8's loadgroup
    renames a test by setting `_nodeid`, which pytest no longer reads, so the marks group nothing.)"""
    from xdist.scheduler import LoadScopeScheduling

    rootpath = config.rootpath

    class ServicesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SERVICES if _uses_services(rootpath / module) else module

    return ServicesTogether(config, log)


# --- each test starts from the same root log level -------------------------------------------------


@pytest.fixture(autouse=True)
def _root_log_level() -> Iterator[None]:
    """Celery's test worker (celery.contrib.testing.worker.start_worker) sets the root logger to
    ERROR and leaves it there: a later test in the same process would see no WARNING in caplog.
    Which tests share a process depends on the xdist schedule, so every test restores it."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


# --- one temporary folder per run, xdist workers included -----------------------------------------


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin has made the factory
def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker makes its temporary folders in the controller's run folder, as a plain run
    does, not in a popen-gwN folder below it: tmp_path then has the same length as in a plain run
    (the embedded broker's wake-up sockets live under it, and a socket's path has at most 103
    bytes, see node.broker.wakeup), and the workers share what is made once per run. Numbered
    folders are made with mkdir, which fails when taken, so two workers never get the same one."""
    if hasattr(config, "workerinput") and config.option.basetemp:
        config._tmp_path_factory._basetemp = Path(config.option.basetemp).resolve().parent


@pytest.fixture(scope="session")
def tiny_random_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, export) of echo.export.random_tiny's tiny student, made once per run; under
    xdist a file lock makes the first worker that needs it export while the others wait."""
    from echo.export.random_tiny import exported_random_model

    root = tmp_path_factory.getbasetemp() / "echo-tiny-models"
    root.mkdir(exist_ok=True)
    with FileLock(root.parent / "echo-tiny-models.lock"):
        return exported_random_model(root)


# --- the fault suite's ledger under xdist ----------------------------------------------------------


_controller_rows: list[dict] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On the xdist controller (only it sees reports with a `node`: the worker that ran them)."""
    if report.when == "teardown" and getattr(report, "node", None) is not None:
        _controller_rows.extend(value for name, value in report.user_properties if name == FAULT_LEDGER)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:  # noqa: ARG001
    if _controller_rows:
        from tests.faults.site import Row, table

        terminalreporter.write_sep("=", "fault suite: what was sent and what arrived")
        terminalreporter.write_line(table([Row(**row) for row in _controller_rows]))
