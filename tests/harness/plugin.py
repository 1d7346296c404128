"""pytest: a failed test's report carries the log of every instance started.

Import ``pytest_runtest_makereport`` into a conftest.py (tests/scenarios does) to use it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.harness.process import STARTED


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        for inst in STARTED.values():
            report.sections.append((f"fieldcast instance {inst.name} ({inst.base_url}) log",
                                    inst.log_tail()))
