"""The fault suite: real node processes, real peers, real services, and faults injected on purpose.

The site's peers and process launcher are the end-to-end tests' fixtures (tests/e2e/conftest.py).
At the end of the run the ledger of every scenario is printed as one table (under pytest-xdist,
by the controller: each test's rows travel in its reports' user_properties, see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest

from tests.conftest import FAULT_LEDGER
from tests.e2e.conftest import *  # noqa: F403  (the PACS, RIS, services and launcher fixtures)
from tests.e2e.conftest import _module_pacs, _module_ris  # noqa: F401  (private: not in *)
from tests.faults.site import RESULTS, table


@pytest.fixture(autouse=True)
def _ledger_rows_in_the_report(request: pytest.FixtureRequest) -> Iterator[None]:
    before = len(RESULTS)
    yield
    request.node.user_properties.extend((FAULT_LEDGER, asdict(row)) for row in RESULTS[before:])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if RESULTS:
        terminalreporter.write_sep("=", "fault suite: what was sent and what arrived")
        terminalreporter.write_line(table(RESULTS))
