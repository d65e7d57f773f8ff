"""Commit signature verification by git itself, against the trust root.

Where it sits: between fetching and accepting a revision. From the trust root this builds an
allowed-signers file (SSH keys with their `valid-after`/`valid-before` windows, which git checks
against the commit's committer time) and, when the trust root holds OpenPGP keys, a private GnuPG
home with those keys imported and trusted. Then one `git log --no-walk` per batch of commits asks
git for `%G?` (and the key's fingerprint) of each; results are cached by commit SHA, since a
commit's signature never changes. The verdict names the principal, or says why not: unsigned, a
bad signature, a key nobody in the trust root holds, or a key used outside its validity window.
`authorised()` then holds a trusted signer to the trust root's roles for what the commit does;
for a commit the control plane signed (a principal with `actsFor`), `on_behalf()` first gives it
the roles of the callers its trailers name, as far as `actsFor` allows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from reconciler.gitsource.errors import GitSourceError, TrustRootError
from reconciler.gitsource.gitrepo import CommitInfo, GitRepo
from reconciler.gitsource.trust import Principal, RolePolicy, TrustKey, TrustRoot

__all__ = ["CommitCheck", "SignatureStatus", "Verifier", "authorised", "on_behalf"]

_FIELD = "\x1f"
_RECORD = "\x1e"
_FORMAT = _FIELD.join(["%H", "%ct", "%G?", "%GF", "%GP", "%GS"]) + _RECORD
_BATCH = 500
_MIN_PER_WORKER = 32  # below this, one git process is cheaper than several


class SignatureStatus(StrEnum):
    TRUSTED = "Trusted"
    UNSIGNED = "Unsigned"
    BAD_SIGNATURE = "BadSignature"
    UNKNOWN_KEY = "UnknownKey"
    KEY_NOT_VALID = "KeyNotValid"
    CANNOT_CHECK = "CannotCheck"
    NOT_ALLOWED = "NotAllowed"  # a trusted signer whose roles may not do what the commit does


@dataclass(frozen=True)
class CommitCheck:
    """The verdict on one commit's signature."""

    sha: str
    committed_at: datetime
    status: SignatureStatus
    principal: str | None = None
    roles: frozenset[str] = frozenset()
    key: str = ""  # fingerprint of the signing key, when git could read one
    reason: str = ""

    @property
    def trusted(self) -> bool:
        return self.status is SignatureStatus.TRUSTED

    def describe(self) -> str:
        if self.trusted:
            return f"signed by {self.principal} with {self.key}"
        return self.reason


def _signer_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


class _Keyring:
    """A private GnuPG home holding the trust root's OpenPGP keys, each trusted ultimately."""

    def __init__(self, home: Path, keys: Sequence[tuple[Principal, TrustKey]], source: str) -> None:
        self.home = home
        self.fingerprints: dict[str, tuple[Principal, TrustKey]] = {}
        gpg = shutil.which("gpg")
        if gpg is None:
            raise TrustRootError(
                [
                    f"{source}:{key.line}: {principal.name}: OpenPGP keys need gpg, which is not installed"
                    for principal, key in keys
                ]
            )
        self.gpg = gpg
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        trust_lines = []
        for principal, key in keys:
            listing = self._gpg(["--with-colons", "--import-options", "show-only", "--import"], key.text)
            fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
            if not fprs:
                raise TrustRootError([f"{source}:{key.line}: {principal.name}: not a readable OpenPGP public key"])
            self._gpg(["--import"], key.text)
            trust_lines.append(f"{fprs[0]}:6:\n")
            for fpr in fprs:
                self.fingerprints[fpr.upper()] = (principal, key)
        self._gpg(["--import-ownertrust"], "".join(trust_lines))

    def _gpg(self, args: list[str], stdin: str) -> str:
        done = subprocess.run(
            [self.gpg, "--homedir", str(self.home), "--batch", "--no-tty", "--quiet", "--no-autostart", *args],
            input=stdin.encode(),
            capture_output=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise GitSourceError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode(errors="replace")


class Verifier:
    """Checks commit signatures in a repository against one trust root; caches verdicts by SHA."""

    def __init__(self, trust: TrustRoot, workdir: Path) -> None:
        self.trust = trust
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.allowed_signers = workdir / "allowed_signers"
        self.allowed_signers.write_text(self._allowed_signers_text(), encoding="utf-8")
        self._ssh = trust.ssh_keys()
        self._keyring: _Keyring | None = None
        pgp = trust.openpgp_keys()
        if pgp:
            self._keyring = _Keyring(workdir / "gnupg", pgp, trust.source)
        self._cache: dict[str, CommitCheck] = {}

    def _allowed_signers_text(self) -> str:
        lines = ["# generated by hotswap from the trust root; do not edit\n"]
        for principal in self.trust.principals:
            for key in principal.keys:
                if key.kind != "ssh":
                    continue
                options = ['namespaces="git"']
                if key.valid_after is not None:
                    options.append(f'valid-after="{_signer_time(key.valid_after)}"')
                if key.valid_before is not None:
                    options.append(f'valid-before="{_signer_time(key.valid_before)}"')
                lines.append(f"{principal.name} {','.join(options)} {key.text}\n")
        return "".join(lines)

    @property
    def config(self) -> list[str]:
        """`-c` settings that make git verify against this trust root only."""
        return [f"gpg.ssh.allowedSignersFile={self.allowed_signers}"]

    @property
    def env(self) -> dict[str, str]:
        home = self._keyring.home if self._keyring else self.workdir / "gnupg-empty"
        return {"GNUPGHOME": str(home)}

    def cached(self, sha: str) -> CommitCheck | None:
        return self._cache.get(sha)

    def check(self, repo: GitRepo, shas: Iterable[str]) -> dict[str, CommitCheck]:
        """The verdict for each commit; only commits not seen before cost a git call.

        git runs ssh-keygen (or gpg) once or twice per commit, so long ranges are split over a few
        `git log` processes running side by side (one per core).
        """
        wanted = list(dict.fromkeys(shas))
        missing = [s for s in wanted if s not in self._cache]
        if missing:
            workers = max(1, min(os.cpu_count() or 1, len(missing) // _MIN_PER_WORKER, 8))
            size = min(_BATCH, -(-len(missing) // workers))
            batches = [missing[i : i + size] for i in range(0, len(missing), size)]
            if len(batches) == 1:
                outputs = [self._log(repo, batches[0])]
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
                    outputs = list(pool.map(lambda batch: self._log(repo, batch), batches))
            for out in outputs:
                for raw in out.split(_RECORD):
                    record = raw.strip("\n")
                    if record:
                        check = self._verdict(*record.split(_FIELD))
                        self._cache[check.sha] = check
        return {s: self._cache[s] for s in wanted}

    def _log(self, repo: GitRepo, batch: list[str]) -> str:
        return repo.run(["log", "--no-walk=unsorted", f"--format={_FORMAT}", *batch], config=self.config, env=self.env)

    def verify_commit(self, repo: GitRepo, sha: str) -> bool:
        """`git verify-commit` on one commit: the slow path, kept for comparison in bench/gitsource.py."""
        try:
            repo.run(["verify-commit", sha], config=self.config, env=self.env)
        except GitSourceError:
            return False
        return True

    def _verdict(self, sha: str, ct: str, code: str, key: str, primary: str, signer: str) -> CommitCheck:
        when = datetime.fromtimestamp(int(ct), tz=UTC)
        owner = self._ssh.get(key)
        if owner is None and self._keyring is not None:
            owner = self._keyring.fingerprints.get(key.upper()) or self._keyring.fingerprints.get(primary.upper())
        short = sha[:12]
        if code == "N":
            return CommitCheck(sha, when, SignatureStatus.UNSIGNED, reason=f"commit {short} is not signed")
        if code == "B":
            return CommitCheck(
                sha, when, SignatureStatus.BAD_SIGNATURE, key=key, reason=f"commit {short} has a bad signature"
            )
        if owner is None:
            what = f"key {key}" if key else "a key"
            return CommitCheck(
                sha,
                when,
                SignatureStatus.UNKNOWN_KEY,
                key=key,
                reason=f"commit {short} is signed by {what} that no principal in the trust root holds",
            )
        principal, trust_key = owner

        def signed_by(status: SignatureStatus, reason: str = "") -> CommitCheck:
            return CommitCheck(sha, when, status, principal.name, principal.roles, key, reason)

        if not trust_key.valid_at(when):
            return signed_by(
                SignatureStatus.KEY_NOT_VALID,
                f"commit {short} (committed {when.isoformat()}) is signed by a key of {principal.name} "
                f"that is not valid then ({trust_key.window()})",
            )
        if code == "G" and (trust_key.kind == "openpgp" or signer == principal.name):
            return signed_by(SignatureStatus.TRUSTED)
        if code in ("X", "Y", "R"):
            what = {"X": "an expired signature", "Y": "an expired key", "R": "a revoked key"}[code]
            return signed_by(SignatureStatus.KEY_NOT_VALID, f"commit {short} is signed with {what} of {principal.name}")
        return signed_by(
            SignatureStatus.CANNOT_CHECK,
            f"git could not confirm the signature of commit {short} by {principal.name} (%G? = {code})",
        )


def on_behalf(check: CommitCheck, commit: CommitInfo, trust: TrustRoot) -> CommitCheck:
    """`check` with the roles a control-plane commit counts for: those of the principals its
    `Hotswap-Approved-By` / `Hotswap-Requested-By` trailers name, within the signer's `actsFor`.

    Any other commit's check is returned as it is."""
    if not check.trusted or check.principal is None:
        return check
    signer = trust.principal(check.principal)
    if signer is None or not signer.is_control_plane:
        return check
    roles: set[str] = set()
    for name in (*commit.api_approved_by, *commit.requested_by):
        caller = trust.principal(name)
        if caller is not None and not caller.is_control_plane:
            roles |= caller.roles & signer.acts_for
    return replace(check, roles=frozenset(roles))


def authorised(check: CommitCheck, commit: CommitInfo, changes_files: bool, roles: RolePolicy) -> CommitCheck:
    """`check` when its signer may make this first-parent commit, else a NOT_ALLOWED verdict saying why.

    A commit that changes files needs an author role; a merge, an author role or `merger` (the
    forge's key); a commit that changes nothing (an approval), an author or an approve role."""
    if not check.trusted:
        return check
    if commit.is_merge:
        allowed, what = roles.author | {"merger"}, f"merge (author roles: {RolePolicy.spell(roles.author)}, or merger)"
    elif changes_files:
        allowed, what = roles.author, f"author fleet changes (author roles: {RolePolicy.spell(roles.author)})"
    else:
        allowed = roles.author | roles.approve
        what = f"approve (approve roles: {RolePolicy.spell(roles.approve)})"
    if check.roles & allowed:
        return check
    return CommitCheck(
        check.sha,
        check.committed_at,
        SignatureStatus.NOT_ALLOWED,
        check.principal,
        check.roles,
        check.key,
        f"commit {check.sha[:12]} is signed by {check.principal} ({RolePolicy.spell(check.roles)}), who may not {what}",
    )


def gpg_available() -> bool:
    return shutil.which("gpg") is not None
