"""The trust root: who may sign the fleet repository, with which keys, holding which roles.

Where it sits: read once at start (`hotswap serve --trust trust.yaml`), from outside the fleet
repository so a commit can never grant itself trust. The verifier (reconciler.gitsource.verify)
turns it into an allowed-signers file for git's SSH signature check and a private GnuPG home for
OpenPGP keys; the approvals code reads principals' roles from it.

    requireSignedCommits: true          # optional: enforce signing whatever the fleet's policy says
    roles:                              # optional; these are the defaults
      author: [admin, developer]        # may sign commits that change the repository's files
      approve: [admin, developer, operator]   # may sign approvals (empty commits, merges, Approved-by)
      adopt: [admin]                    # may accept a rewritten history, and adopt unverified commits
    principals:
      - name: alice@example.com
        roles: [admin]
        keys:
          - ssh-ed25519 AAAA... alice                  # a key valid at any time
          - key: ssh-ed25519 AAAA... alice-old         # a rotated key: commits after validBefore
            validAfter: 2025-01-01                     # (by committer time) no longer verify
            validBefore: 2026-01-01T00:00:00Z
          - key: |                                     # an OpenPGP armored public key (needs gpg)
              -----BEGIN PGP PUBLIC KEY BLOCK-----
              ...

Times without a zone are UTC. `valid-after`/`valid-before` (git's spelling) are accepted too.
A merge signed by a `merger` key (the forge's) passes as authored: what it merged was reviewed there.
The control plane is a principal of its own for API writes (reconciler.gitsource.gitwrite): instead of roles
it lists the roles it may act for, and holds the public half of `<data-dir>/auth/git-signing-key`
(`hotswap up` prints the line):

      - {name: hotswap-control-plane, actsFor: [admin, developer, operator], keys: ["ssh-ed25519 AAAA..."]}

A commit it signs counts only for the callers it names (`Hotswap-Approved-By:` on an approval,
`Hotswap-Requested-By:` on a change), each a principal of this file (the API token's subject is
the principal's name), with that principal's roles that are also in `actsFor`; it has no roles of
its own, so it can neither approve nor adopt for itself.
The file is YAML without anchors or aliases, at most TRUST_BYTES.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.gitsource.errors import TrustRootError
from reconciler.spec.limits import yaml_reader

__all__ = [
    "KeyKind",
    "Principal",
    "RolePolicy",
    "TrustKey",
    "TrustRoot",
    "load_trust",
    "parse_trust",
    "ssh_fingerprint",
]

KeyKind = Literal["ssh", "openpgp"]

ROLES = ("admin", "developer", "operator", "viewer", "merger")
ACTIONS = ("author", "approve", "adopt")
TRUST_BYTES = 1024 * 1024
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
PGP_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
# Names go into git's allowed-signers file as principals: no spaces, quotes, commas or patterns.
PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+@-]{0,127}")


@dataclass(frozen=True)
class TrustKey:
    """One public key of a principal, valid (by committer time) inside [valid_after, valid_before)."""

    kind: KeyKind
    text: str  # `type base64` for SSH (comment dropped), the armored block for OpenPGP
    fingerprint: str  # SHA256:... for SSH; "" for OpenPGP until the keyring reads it
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    line: int = 0

    def valid_at(self, when: datetime) -> bool:
        if self.valid_after is not None and when < self.valid_after:
            return False
        return not (self.valid_before is not None and when >= self.valid_before)

    def window(self) -> str:
        parts = []
        if self.valid_after is not None:
            parts.append(f"valid after {self.valid_after.isoformat()}")
        if self.valid_before is not None:
            parts.append(f"valid before {self.valid_before.isoformat()}")
        return ", ".join(parts) or "always valid"


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    keys: tuple[TrustKey, ...]
    acts_for: frozenset[str] = frozenset()  # a control plane: the roles of callers it may sign for

    @property
    def is_control_plane(self) -> bool:
        return bool(self.acts_for)

    def has_role(self, roles: frozenset[str]) -> bool:
        return bool(self.roles & roles)


@dataclass(frozen=True)
class RolePolicy:
    """Which roles may author fleet commits, approve, and adopt (accept a rewritten history)."""

    author: frozenset[str] = frozenset({"admin", "developer"})
    approve: frozenset[str] = frozenset({"admin", "developer", "operator"})
    adopt: frozenset[str] = frozenset({"admin"})

    @staticmethod
    def spell(roles: frozenset[str]) -> str:
        return ", ".join(sorted(roles)) or "none"


@dataclass(frozen=True)
class TrustRoot:
    principals: tuple[Principal, ...]
    require_signed_commits: bool = False
    source: str = ""
    roles: RolePolicy = field(default_factory=RolePolicy)
    _by_name: Mapping[str, Principal] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name.lower(): p for p in self.principals})

    def principal(self, name: str) -> Principal | None:
        """The principal called `name` (case-insensitive); `Name <email>` matches on the email too."""
        key = name.strip().lower()
        found = self._by_name.get(key)
        if found is None:
            match = re.search(r"<([^<>]+)>\s*$", key)
            if match:
                found = self._by_name.get(match.group(1).strip())
        return found

    def holder_of(self, public_key: str) -> Principal | None:
        """The principal that lists this SSH public key (`TYPE BASE64 [COMMENT]`), if any."""
        try:
            fingerprint = ssh_fingerprint(public_key)
        except ValueError:
            return None
        found = self.ssh_keys().get(fingerprint)
        return found[0] if found else None

    def ssh_keys(self) -> dict[str, tuple[Principal, TrustKey]]:
        """SSH fingerprint -> (principal, key)."""
        return {k.fingerprint: (p, k) for p in self.principals for k in p.keys if k.kind == "ssh"}

    def openpgp_keys(self) -> list[tuple[Principal, TrustKey]]:
        return [(p, k) for p in self.principals for k in p.keys if k.kind == "openpgp"]


def ssh_fingerprint(public_key: str) -> str:
    """`ssh-ed25519 AAAA... comment` -> `SHA256:...` as ssh-keygen -l and git's %GF print it."""
    parts = public_key.split()
    if len(parts) < 2:
        raise ValueError("an SSH public key is `TYPE BASE64 [COMMENT]`")
    key_type, blob_text = parts[0], parts[1]
    if key_type not in SSH_KEY_TYPES:
        raise ValueError(f"unknown SSH key type {key_type!r}; one of {', '.join(SSH_KEY_TYPES)}")
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key's base64 part does not decode") from None
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != key_type.encode():
        raise ValueError(f"the key's data is not a {key_type} key")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


class _Reader:
    """Walks the YAML tree collecting `path:line: field: message` problems."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def add(self, line: int, where: str, message: str) -> None:
        self.problems.append(f"{self.path}:{line}: {where}: {message}")


def _line(node: Any, key: str | int | None = None) -> int:
    try:
        if key is None:
            return int(node.lc.line) + 1
        if isinstance(node, CommentedMap):
            return int(node.lc.key(key)[0]) + 1
        if isinstance(node, CommentedSeq):
            return int(node.lc.item(key)[0]) + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    return 1


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"{value!r} is not a date or time (2026-01-31 or 2026-01-31T12:00:00Z)")


def _key(reader: _Reader, node: Any, where: str, line: int) -> TrustKey | None:
    valid_after = valid_before = None
    if isinstance(node, CommentedMap):
        known = {"key", "validAfter", "valid-after", "validBefore", "valid-before"}
        for name in node:
            if name not in known:
                reader.add(_line(node, name), f"{where}.{name}", "unknown field; expected key, validAfter, validBefore")
        text = node.get("key")
        for names, slot in ((("validAfter", "valid-after"), "after"), (("validBefore", "valid-before"), "before")):
            for name in names:
                if name in node:
                    try:
                        when = _when(node[name])
                    except ValueError as exc:
                        reader.add(_line(node, name), f"{where}.{name}", str(exc))
                        return None
                    if slot == "after":
                        valid_after = when
                    else:
                        valid_before = when
        if text is None:
            reader.add(line, f"{where}.key", "missing; an SSH public key or an OpenPGP armored key")
            return None
        line = _line(node, "key")
        where = f"{where}.key"
    else:
        text = node
    if not isinstance(text, str) or not text.strip():
        reader.add(line, where, "must be an SSH public key or an OpenPGP armored key")
        return None
    if valid_after and valid_before and valid_after >= valid_before:
        reader.add(line, where, "validAfter must be before validBefore")
        return None
    text = text.strip()
    if text.startswith(PGP_BEGIN):
        return TrustKey("openpgp", text + "\n", "", valid_after, valid_before, line)
    try:
        fingerprint = ssh_fingerprint(text)
    except ValueError as exc:
        reader.add(line, where, str(exc))
        return None
    key_type, blob = text.split()[:2]
    return TrustKey("ssh", f"{key_type} {blob}", fingerprint, valid_after, valid_before, line)


def parse_trust(text: str, path: str = "trust.yaml") -> TrustRoot:
    """Parse trust-root YAML; every problem at once in a `TrustRootError`."""
    reader = _Reader(path)
    try:
        doc = yaml_reader("rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise TrustRootError(
            [f"{path}:{mark.line + 1 if mark else 0}: yaml: {exc.problem or exc.context or 'invalid YAML'}"]
        ) from None
    except YAMLError as exc:
        raise TrustRootError([f"{path}:0: yaml: {exc}"]) from None
    if not isinstance(doc, CommentedMap):
        raise TrustRootError([f"{path}:1: (document): must be a mapping with `principals`"])
    for name in doc:
        if name not in ("principals", "requireSignedCommits", "roles"):
            reader.add(_line(doc, name), str(name), "unknown field; expected principals, requireSignedCommits, roles")
    role_policy = _role_policy(reader, doc)
    require = doc.get("requireSignedCommits", False)
    if not isinstance(require, bool):
        reader.add(_line(doc, "requireSignedCommits"), "requireSignedCommits", "must be true or false")
        require = False
    items = doc.get("principals")
    if not isinstance(items, CommentedSeq):
        reader.add(_line(doc, "principals") if "principals" in doc else 1, "principals", "must be a list")
        raise TrustRootError(reader.problems)
    principals: list[Principal] = []
    seen_names: set[str] = set()
    seen_keys: dict[str, str] = {}
    for index, item in enumerate(items):
        where = f"principals[{index}]"
        line = _line(items, index)
        if not isinstance(item, CommentedMap):
            reader.add(line, where, "must be a mapping with name, roles, keys")
            continue
        for name in item:
            if name not in ("name", "roles", "actsFor", "keys"):
                reader.add(_line(item, name), f"{where}.{name}", "unknown field; expected name, roles, actsFor, keys")
        name = item.get("name")
        if not isinstance(name, str) or not PRINCIPAL_NAME.fullmatch(name):
            reader.add(
                _line(item, "name") if "name" in item else line,
                f"{where}.name",
                f"{name!r} is not a principal name (letters, digits and ._%+@-, e.g. alice@example.com)",
            )
            continue
        if name.lower() in seen_names:
            reader.add(_line(item, "name"), f"{where}.name", f"{name!r} is listed twice")
        seen_names.add(name.lower())
        role_set = _roles(reader, item, "roles", where)
        acts_for = _roles(reader, item, "actsFor", where)
        if acts_for and role_set:
            reader.add(
                _line(item, "actsFor"),
                f"{where}.actsFor",
                "a control plane (actsFor) holds no roles of its own; list its roles under actsFor only",
            )
        if "actsFor" in item and not acts_for:
            reader.add(_line(item, "actsFor"), f"{where}.actsFor", "must name at least one role")
        keys_node = item.get("keys", [])
        keys: list[TrustKey] = []
        if not isinstance(keys_node, CommentedSeq) or not keys_node:
            reader.add(_line(item, "keys") if "keys" in item else line, f"{where}.keys", "must be a non-empty list")
        else:
            for k_index, key_node in enumerate(keys_node):
                key = _key(reader, key_node, f"{where}.keys[{k_index}]", _line(keys_node, k_index))
                if key is None:
                    continue
                if key.kind == "ssh":
                    owner = seen_keys.get(key.fingerprint)
                    if owner is not None:
                        reader.add(key.line, f"{where}.keys[{k_index}]", f"the same key is already listed for {owner}")
                        continue
                    seen_keys[key.fingerprint] = name
                keys.append(key)
        principals.append(Principal(name, role_set, tuple(keys), acts_for))
    if reader.problems:
        raise TrustRootError(reader.problems)
    return TrustRoot(tuple(principals), require, path, role_policy)


def _roles(reader: _Reader, item: CommentedMap, field_name: str, where: str) -> frozenset[str]:
    """A principal's `roles` or `actsFor` list; unknown roles are problems."""
    roles = item.get(field_name, [])
    found: set[str] = set()
    if not isinstance(roles, list):
        reader.add(_line(item, field_name), f"{where}.{field_name}", "must be a list of roles")
        return frozenset()
    for index, role in enumerate(roles):
        if role not in ROLES:
            problem = f"{role!r} is not one of {', '.join(ROLES)}"
            reader.add(_line(roles, index), f"{where}.{field_name}[{index}]", problem)
        else:
            found.add(role)
    return frozenset(found)


def _role_policy(reader: _Reader, doc: CommentedMap) -> RolePolicy:
    """`roles: {author: [...], approve: [...], adopt: [...]}`; each missing entry keeps its default."""
    node = doc.get("roles")
    if node is None:
        return RolePolicy()
    if not isinstance(node, CommentedMap):
        reader.add(_line(doc, "roles"), "roles", f"must be a mapping of {', '.join(ACTIONS)} to lists of roles")
        return RolePolicy()
    chosen: dict[str, frozenset[str]] = {}
    for action in node:
        where = f"roles.{action}"
        if action not in ACTIONS:
            reader.add(_line(node, action), where, f"unknown field; expected {', '.join(ACTIONS)}")
            continue
        roles = node[action]
        if not isinstance(roles, CommentedSeq):
            reader.add(_line(node, action), where, "must be a list of roles")
            continue
        for index, role in enumerate(roles):
            if role not in ROLES:
                reader.add(_line(roles, index), f"{where}[{index}]", f"{role!r} is not one of {', '.join(ROLES)}")
        chosen[str(action)] = frozenset(r for r in roles if r in ROLES)
    return RolePolicy(**chosen)


def load_trust(path: Path) -> TrustRoot:
    try:
        size = path.stat().st_size
        if size > TRUST_BYTES:
            raise TrustRootError([f"{path}:0: file: {size} bytes, over the {TRUST_BYTES} bytes a trust root may hold"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustRootError([f"{path}:0: file: cannot be read: {exc}"]) from None
    return parse_trust(text, str(path))
