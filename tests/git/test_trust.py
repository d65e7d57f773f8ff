"""The trust root file: principals, roles, keys and validity windows; every mistake with its line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.gitsource.errors import TrustRootError
from reconciler.gitsource.trust import load_trust, parse_trust, ssh_fingerprint
from reconciler.gitsource.verify import Verifier
from tests.git.conftest import Keys


def test_valid_trust_root_with_windows(keys: Keys, tmp_path: Path) -> None:
    text = f"""\
requireSignedCommits: true
principals:
  - name: alice@example.com
    roles: [admin]
    keys:
      - {keys.alice.public}
      - key: {keys.carol.public}
        valid-after: 2025-01-01
        validBefore: 2026-01-01T12:00:00Z
"""
    trust = parse_trust(text)
    assert trust.require_signed_commits
    alice = trust.principal("Alice <ALICE@example.com>")
    assert alice is not None and alice.roles == frozenset({"admin"})
    windowed = alice.keys[1]
    assert windowed.valid_after == datetime(2025, 1, 1, tzinfo=UTC)
    assert windowed.valid_before == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert windowed.valid_at(datetime(2025, 6, 1, tzinfo=UTC))
    assert not windowed.valid_at(datetime(2026, 1, 1, 12, tzinfo=UTC))
    verifier = Verifier(trust, tmp_path / "v")
    allowed = verifier.allowed_signers.read_text()
    assert 'valid-after="20250101000000Z",valid-before="20260101120000Z"' in allowed
    assert allowed.count("alice@example.com ") == 2


def test_fingerprint_matches_ssh_keygen(keys: Keys) -> None:
    import subprocess

    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(keys.alice.private) + ".pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ssh_fingerprint(keys.alice.public) == out.split()[1]


def test_every_mistake_is_reported_with_its_line(keys: Keys) -> None:
    text = f"""\
principals:
  - name: alice@example.com
    roles: [admin, superuser]
    keys: [ssh-ed25519 not-base64!]
  - name: "bob smith"
    roles: [developer]
    keys: [{keys.bob.public}]
  - name: carol
    roles: [admin]
    keys:
      - key: {keys.carol.public}
        validAfter: 2026-02-01
        validBefore: 2026-01-01
      - {keys.carol.public}
      - {{key: {keys.forge.public}, expires: soon}}
    email: carol@example.com
"""
    with pytest.raises(TrustRootError) as caught:
        parse_trust(text, "trust.yaml")
    problems = caught.value.problems
    assert "trust.yaml:3: principals[0].roles[1]: 'superuser' is not one of" in problems[0]
    assert problems[1].startswith("trust.yaml:4: principals[0].keys[0]: the key's base64 part")
    assert problems[2].startswith("trust.yaml:5: principals[1].name: 'bob smith' is not a principal name")
    assert any(p.startswith("trust.yaml:16: principals[2].email: unknown field") for p in problems)
    assert any("trust.yaml:11: principals[2].keys[0].key: validAfter must be before" in p for p in problems)
    assert any("principals[2].keys[2].expires: unknown field" in p for p in problems)


def test_duplicate_key_and_name_are_refused(keys: Keys) -> None:
    text = f"""\
principals:
  - {{name: a, roles: [admin], keys: [{keys.alice.public}]}}
  - {{name: A, roles: [admin], keys: [{keys.alice.public}]}}
"""
    with pytest.raises(TrustRootError) as caught:
        parse_trust(text)
    assert any("listed twice" in p for p in caught.value.problems)
    assert any("already listed for a" in p for p in caught.value.problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("principals: {}\n", "1: principals: must be a list"),
        ("- a\n", "1: (document): must be a mapping"),
        ("principals: [\n", "yaml:"),
        ("principals: []\nextra: 1\n", "2: extra: unknown field"),
        ("principals: [{name: a, roles: [admin], keys: []}]\n", "principals[0].keys: must be a non-empty list"),
        ("principals: [{name: a, keys: [ssh-dss AAAA]}]\n", "unknown SSH key type 'ssh-dss'"),
        ("principals: [{name: a, keys: [{key: ssh-ed25519 AAAA, validAfter: [1]}]}]\n", "is not a date"),
        ("requireSignedCommits: maybe\nprincipals: []\n", "requireSignedCommits: must be true or false"),
    ],
)
def test_malformed_trust_roots(text: str, expected: str) -> None:
    with pytest.raises(TrustRootError) as caught:
        parse_trust(text)
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrustRootError, match="cannot be read"):
        load_trust(tmp_path / "absent.yaml")


def test_load_trust_reads_a_file(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "trust.yaml"
    path.write_text(f"principals: [{{name: forge, roles: [merger], keys: ['{keys.forge.public}']}}]\n")
    trust = load_trust(path)
    assert trust.principal("forge") is not None and trust.source == str(path)


def test_a_control_plane_principal_lists_the_roles_it_acts_for_and_no_roles_of_its_own(keys: Keys) -> None:
    from reconciler.gitsource.acting import ActingError, acting_for

    text = (
        "principals:\n"
        f'  - {{name: alice@example.com, roles: [admin], keys: ["{keys.alice.public}"]}}\n'
        f'  - {{name: hotswap-control-plane, actsFor: [developer, operator], keys: ["{keys.forge.public}"]}}\n'
    )
    trust = parse_trust(text)
    holder = trust.holder_of(keys.forge.public)
    assert holder is not None and holder.acts_for == {"developer", "operator"} and holder.roles == frozenset()
    acting = acting_for(trust, keys.forge.public, "Alice@example.com")
    assert acting.caller.name == "alice@example.com" and acting.roles == frozenset()  # admin is not acted for
    with pytest.raises(ActingError, match=r"commit-signing key is not in trust\.yaml"):
        acting_for(trust, keys.bob.public, "alice@example.com")
    with pytest.raises(ActingError, match="not a principal"):
        acting_for(trust, keys.forge.public, "hotswap-control-plane")
    with pytest.raises(TrustRootError, match="holds no roles of its own"):
        parse_trust(text.replace("actsFor: [developer, operator]", "roles: [admin], actsFor: [developer]"))
