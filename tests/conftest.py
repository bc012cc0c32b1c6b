"""Suite-wide gates and reporting: tests that need the official document or a registry.

Conformance tests without the official OpenAPI document, and registry tests without a
reachable package registry, skip (under CI=true they fail); each group is summed up in
one line at the end of the run. The suite runs on several processes (pytest-xdist), so
what the line counts travels on the test reports, which reach the process that prints it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.openapi_support import ABSENT, OPENAPI_PATH
from tests.registry_support import UNREACHABLE, require_registry

# A test report's user property: this emulator test's answers went unchecked.
_UNCHECKED = "openapi-unchecked"


def pytest_runtest_setup(item: pytest.Item) -> None:
    require_registry(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    from tests.emulator.conftest import UNCHECKED

    # PYTEST_CURRENT_TEST, as UNCHECKED holds it, reads "<nodeid> (<phase>)".
    if report.when == "teardown" and any(u.startswith(f"{item.nodeid} ") for u in UNCHECKED):
        report.user_properties.append((_UNCHECKED, item.nodeid))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    every = terminalreporter.stats.get("skipped", [])
    skipped = [r for r in every if ABSENT in str(getattr(r, "longrepr", ""))]
    offline = [r for r in every if UNREACHABLE in str(getattr(r, "longrepr", ""))]
    for other in every:
        if other not in skipped and other not in offline:  # named, one line each
            terminalreporter.write_line(f"SKIPPED {other.nodeid}: {_reason(other)}")
    if offline:
        reasons = sorted({_reason(r).split(f"{UNREACHABLE} (", 1)[-1].removesuffix(")")
                          for r in offline})
        terminalreporter.write_line(
            f"{len(offline)} registry tests skipped: a package registry is unreachable "
            f"({'; '.join(reasons)}); under CI=true they run and must pass")
    unchecked = {value for reports in terminalreporter.stats.values() for r in reports
                 for key, value in getattr(r, "user_properties", ()) if key == _UNCHECKED}
    if skipped or unchecked:
        terminalreporter.write_line(
            f"{len(skipped)} conformance tests skipped and {len(unchecked)} emulator tests "
            f"ran without checking answers: the official OpenAPI document is absent "
            f"({OPENAPI_PATH}); under CI=true they run and must pass")


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
