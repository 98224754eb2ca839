"""The fault suite: real node processes, real peers, real services, and faults injected on purpose.

The site's peers and process launcher are the end-to-end tests' fixtures (tests/e2e/conftest.py).
At the end of the run the ledger of every scenario is printed as one table.
"""

from __future__ import annotations

from tests.e2e.conftest import *  # noqa: F403  (the PACS, RIS, services and launcher fixtures)
from tests.e2e.conftest import _module_pacs, _module_ris  # noqa: F401  (private: not in *)
from tests.faults.site import RESULTS, table


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if RESULTS:
        terminalreporter.write_sep("=", "fault suite: what was sent and what arrived")
        terminalreporter.write_line(table(RESULTS))
