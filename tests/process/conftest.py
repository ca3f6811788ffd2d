"""Real processes: every test in ``tests/process`` is ``slow``, and gets real servers through ``servers``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Servers

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``slow``: ``pytest -m "not slow"`` leaves real processes out."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """Starts ``manage.py serve`` processes (output in ``tmp_path``); stops those still running afterwards."""
    tracker = Servers(tmp_path)
    yield tracker
    tracker.stop_all()
