"""Operator fixtures.

- ``operator_process`` (session; the process itself is ``_operator`` in tests/conftest.py): one ``kubemaas operator --all-namespaces`` subprocess
  against the real control plane (``control_plane`` fixture), started once and waited for
  through its liveness endpoint. A test may ``kill()``/``start()``/``restart()`` it (the
  restart tests do); it is started again if a test left it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.operator.support import OperatorProcess


@pytest.fixture
def operator_process(_operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """The running operator; on a failed test its log tail is printed."""
    _operator.start()
    yield _operator
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- operator log (tail) ---\n{_operator.logs()[-6000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
