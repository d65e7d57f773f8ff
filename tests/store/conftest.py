"""Store fixtures: every state-store test runs on SQLite and on a real PostgreSQL, every blob-store
test on a local directory and on a real S3 server (moto_server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.store.blobs import BlobStore, open_blob_store
from reconciler.store.state import StateStore, open_state_store


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty state database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("database_url"))


@pytest.fixture
def state(state_url: str) -> Iterator[StateStore]:
    store = open_state_store(database_url=state_url)
    yield store
    store.close()


@pytest.fixture(params=["local", "s3"])
def blobs_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "blobs")
    return str(request.getfixturevalue("blob_url"))


@pytest.fixture
def blobs(blobs_url: str) -> BlobStore:
    return open_blob_store(blobs_url)
