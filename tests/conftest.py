"""Suite-wide: how the suite splits over pytest-xdist workers, and the tiny random export that
several folders share.

Under `-n N --dist loadgroup` (the default, see [tool.pytest.ini_options]) every test gets an
`xdist_group`, so a group always runs whole on one worker, one test after another:

- "services": every test that talks to the machine's shared services (PostgreSQL, Redis, Orthanc,
  the FHIR server) or starts node processes (tests/e2e, tests/faults). They run serially, as in a
  run without xdist, so no two of them ever meet on a database, a Redis database or a port;
- every other test module is a group of its own, so its module-scoped fixtures are built once.

The fault suite's ledger table (tests/faults/conftest.py) is printed by the process that runs the
tests; under xdist the rows travel to the controller in the reports' user_properties and are
printed here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from filelock import FileLock

TESTS = Path(__file__).resolve().parent
SERVICE_FOLDERS = ("e2e", "faults")
# Names that mean a module talks to a shared service (or builds the URL of one).
SERVICE_WORDS = re.compile(r"redis|postgres|psycopg|orthanc|fhir_server|6379|5432", re.IGNORECASE)
SERVICE_FIXTURES = frozenset(
    {"postgres_url", "postgres_database", "pg_database", "redis_url", "redis_prefix", "production_site"}
)
FAULT_LEDGER = "fault_ledger"

_module_uses_services: dict[Path, bool] = {}


def _uses_services(item: pytest.Item) -> bool:
    path = Path(item.path)
    relative = path.relative_to(TESTS) if path.is_relative_to(TESTS) else path
    if relative.parts and relative.parts[0] in SERVICE_FOLDERS:
        return True
    if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    if path not in _module_uses_services:
        text = path.read_text(errors="replace") if path.is_file() else ""
        _module_uses_services[path] = bool(SERVICE_WORDS.search(text))
    return _module_uses_services[path]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks (it renames the tests by group)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        path = Path(item.path)
        module = path.relative_to(TESTS.parent).as_posix() if path.is_relative_to(TESTS.parent) else path.name
        item.add_marker(pytest.mark.xdist_group("services" if _uses_services(item) else module))


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
