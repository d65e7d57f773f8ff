"""Fixtures for the Git source tests: real ed25519 keys (made once) and a trust root over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.gitsource.source import GitSource, SourceConfig
from reconciler.gitsource.trust import parse_trust
from tests.git.gitutil import Key, Repo, Workspace, fleet_yaml, key_entry, make_key, module_yaml, trust_yaml


@dataclass(frozen=True)
class Keys:
    alice: Key  # admin
    bob: Key  # developer
    carol: Key  # admin
    forge: Key  # merger
    mallory: Key  # in no trust root


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    return Keys(*(make_key(directory, n) for n in ("alice", "bob", "carol", "forge", "mallory")))


def standard_trust(keys: Keys, *, require_signed: bool = False) -> str:
    return trust_yaml(
        ("alice@example.com", ["admin"], key_entry(keys.alice)),
        ("bob@example.com", ["developer"], key_entry(keys.bob)),
        ("carol@example.com", ["admin"], key_entry(keys.carol)),
        ("forge", ["merger"], key_entry(keys.forge)),
        require_signed=require_signed,
    )


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def seeded_repo(
    ws: Workspace, keys: Keys, *, require_signed: bool = True, merges_approve: bool = True, count: int = 1
) -> Repo:
    """A repository whose first commit (signed by alice) holds a valid fleet with module greeter@1.0.0."""
    repo = ws.repo()
    repo.write(
        "fleet/fleet.yaml", fleet_yaml(require_signed=require_signed, merges_approve=merges_approve, count=count)
    )
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.0.0"))
    repo.write("README.md", "a fleet\n")
    repo.commit("initial fleet", key=keys.alice)
    return repo


def source_for(
    ws: Workspace, url: str | Path, trust_text: str, *, path: str = "fleet", interval: float = 0.2, **kwargs: object
) -> GitSource:
    config = SourceConfig(url=str(url), branch="main", path=path, interval=interval)
    return GitSource(config, parse_trust(trust_text), ws.root / "cache", **kwargs)  # type: ignore[arg-type]
