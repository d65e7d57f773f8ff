"""Fixtures shared by every test package: paths to the repository's own example fleet, and an
embedded state store in the test's folder (a package whose tests run on both back ends overrides it)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.store.state import StateStore, open_state_store

pytest_plugins = ["tests.services"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def example_fleet() -> Path:
    return ROOT / "fleet-example"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = open_state_store(data_dir=tmp_path / "state")
    try:
        yield state
    finally:
        state.close()


# -- every async test is bounded ------------------------------------------------------------------
# pytest-timeout's signal method raises inside whatever event-loop callback runs at that moment,
# where asyncio logs the exception and goes on: a hung async test would then hang the whole run. So
# each coroutine test runs under asyncio.timeout (it fails with its own traceback, the run goes on),
# and pytest-timeout (thread method, pyproject.toml) stays behind it for a loop that is blocked outright.
ASYNC_TEST_SECONDS = 240.0


def _bounded(test: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        limit = asyncio.timeout(ASYNC_TEST_SECONDS)
        try:
            async with limit:
                return await test(*args, **kwargs)
        except TimeoutError:
            if limit.expired():
                pytest.fail(f"{test.__qualname__} did not finish within {ASYNC_TEST_SECONDS:.0f} s", pytrace=True)
            raise

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.obj = _bounded(item.obj)
