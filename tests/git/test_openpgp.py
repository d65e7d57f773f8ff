"""OpenPGP keys in the trust root: verified through a private GnuPG home, windows applied by us."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.gitsource.status import Reason
from tests.git.conftest import Keys, source_for
from tests.git.gitutil import Workspace, fleet_yaml, module_yaml, trust_yaml


@pytest.fixture
def gpg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    home = tmp_path_factory.mktemp("gpg")
    home.chmod(0o700)
    run = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--passphrase", "", "--pinentry-mode", "loopback"]
    subprocess.run([*run, "--quick-gen-key", "Dana <dana@example.com>", "ed25519", "sign", "never"], check=True)
    listing = subprocess.run(
        ["gpg", "--homedir", str(home), "--with-colons", "--list-secret-keys"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    yield home, fpr
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def armored(home: Path, fpr: str) -> str:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--armor", "--export", fpr], capture_output=True, text=True, check=True
    ).stdout


def indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.strip().splitlines())


def test_openpgp_signed_commits_verify_and_approve(ws: Workspace, keys: Keys, gpg_home: tuple[Path, str]) -> None:
    home, fpr = gpg_home
    keys_yaml = "      - key: |\n" + indent(armored(home, fpr), 10)
    trust = trust_yaml(("dana@example.com", ["admin"], keys_yaml))
    repo = ws.repo()
    repo.write("fleet/fleet.yaml", fleet_yaml(require_signed=True))
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.0.0"))
    gpg_env = {"GNUPGHOME": str(home)}
    repo.git("add", "-A")
    sign = ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={fpr}", "commit", "-q", "-S"]
    repo.git(*sign, "-m", "signed with OpenPGP", env=gpg_env)
    repo.git(*sign, "--allow-empty", "-m", "approve", "-m", "Hotswap-Approve: greeter@1.1.0", env=gpg_env)
    source = source_for(ws, repo.path, trust)
    status = source.sync()
    assert status.ready and status.verified, status.conditions
    latest = source.latest
    assert latest is not None
    assert [(a.principal, a.target) for a in latest.approvals] == [("dana@example.com", "greeter@1.1.0")]
    # an SSH-signed commit by a stranger on top is still refused
    repo.write("README.md", "x\n")
    repo.commit("stranger", key=keys.mallory)
    assert source.sync().stalled is not None


def test_openpgp_key_outside_its_window_is_refused(ws: Workspace, gpg_home: tuple[Path, str]) -> None:
    home, fpr = gpg_home
    before = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    keys_yaml = f"      - validBefore: {before}\n        key: |\n" + indent(armored(home, fpr), 10)
    trust = trust_yaml(("dana@example.com", ["admin"], keys_yaml))
    repo = ws.repo()
    repo.write("fleet/fleet.yaml", fleet_yaml(require_signed=True))
    repo.git("add", "-A")
    repo.git(
        "-c",
        "gpg.format=openpgp",
        "-c",
        f"user.signingkey={fpr}",
        "commit",
        "-q",
        "-S",
        "-m",
        "late",
        env={"GNUPGHOME": str(home)},
    )
    status = source_for(ws, repo.path, trust).sync()
    assert status.stalled is not None and status.stalled.reason == Reason.UNVERIFIED_COMMIT
    assert "not valid then" in status.stalled.message
