"""Fixtures and hooks of the reliability suite (helpers live in `_helpers`).

Each test adds its figures (crashes injected, faults by kind, rows lost or duplicated, bad
inputs tried) to a session-wide table, printed at the end of the run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from _helpers import FIGURES


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = {}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, {})
    if not figures:
        return
    terminalreporter.write_sep("-", "reliability figures")
    for key in sorted(figures):
        terminalreporter.write_line(f"{key}: {json.dumps(figures[key], sort_keys=True)}")


@pytest.fixture
def figures(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The session's figures: tests add to it (see `add_figure`)."""
    return pytestconfig.stash[FIGURES]
