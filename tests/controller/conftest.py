"""The controller tests' state store: an embedded one in the test's folder, closed after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.store.state import StateStore, open_state_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = open_state_store(data_dir=tmp_path / "state")
    try:
        yield state
    finally:
        state.close()
