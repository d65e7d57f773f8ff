"""Fixtures shared by every test package: paths to the repository's own example fleet."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.services"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def example_fleet() -> Path:
    return ROOT / "fleet-example"
