"""An OCI reference (`REGISTRY/REPO[:TAG][@sha256:DIGEST]`), parsed and checked. Pure, no I/O.

Where it sits: the fleet model checks every `source.oci` and update repository with it
(`reconciler.spec.models`, `reconciler.spec.updates`); the registry client that pulls, pushes and
lists tags (`reconciler.gitsource.oci.OciClient`) takes what it parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REGISTRY = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None  # of the manifest

    @classmethod
    def parse(cls, text: str) -> Reference:
        """`REGISTRY/REPO[:TAG][@sha256:DIGEST]`; a ValueError names the part that is wrong."""
        given = text
        name, at, digest = text.strip().partition("@")
        registry, slash, rest = name.partition("/")
        if not slash or not ("." in registry or ":" in registry or registry == "localhost" or registry.startswith("[")):
            raise ValueError(f"{given!r}: expected REGISTRY/REPO:TAG@sha256:DIGEST, with the registry's host")
        if not _REGISTRY.fullmatch(registry):
            raise ValueError(f"{given!r}: bad registry host {registry!r}: expected HOST or HOST:PORT")
        repository, colon, tag = rest.partition(":")
        if not _REPOSITORY.fullmatch(repository):
            raise ValueError(
                f"{given!r}: bad repository name {repository!r}: lowercase letters and digits, "
                "separated by '/', '.', '_', '__' or '-'"
            )
        if colon and not _TAG.fullmatch(tag):
            raise ValueError(
                f"{given!r}: bad tag {tag!r}: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            )
        if at and not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"{given!r}: bad digest {digest!r}: expected sha256: and 64 lowercase hex digits")
        if not colon and not at:
            raise ValueError(f"{given!r}: neither tag nor digest: name a tag or a digest (REPO:TAG or REPO@sha256:...)")
        return cls(registry, repository, tag if colon else None, digest if at else None)

    def __str__(self) -> str:
        return (
            f"{self.registry}/{self.repository}"
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    @property
    def target(self) -> str:
        """What the registry's manifest URL takes: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"
