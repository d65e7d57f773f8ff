"""Update automation: a newer tag in an OCI repository becomes a signed commit that bumps a Module.

Where it sits: `ControlPlane.start` runs `UpdateAutomation.run` beside the controller. For every
`ModuleUpdate` of the revision the controller follows (reconciler.spec.updates), every
`intervalSeconds` and only on the leading replica, it lists the repository's tags (`reconciler.gitsource.oci`),
takes the highest semver tag inside the range that is newer than the Module's `version`, resolves its
manifest digest, and writes, through the same `GitWriter` as the API's writes (a round-trip YAML edit,
so comments survive; a commit signed with the control plane's key), `spec.version` and
`spec.source: {oci: REGISTRY/REPO:TAG@sha256:...}`, to the tracked branch or to a branch
`hotswap/update/MODULE-VERSION` for review. The commit then goes through what a person's commit goes
through: signature policy, approvals, interface gates and the rollout strategy. Each write is an event
(`ModuleUpdateCommitted`) and an audit entry; a failure (registry down, push refused) is an event too,
and the check runs again at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.gitsource.gitwrite import GitWriteError, GitWriter, WriteResult, edit_document, find_document, flow_map
from reconciler.spec.updates import ModuleUpdate, Range, parse_version, version_key
from reconciler.store.errors import StoreError

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedMap

    from reconciler.apply.controller import Controller
    from reconciler.gitsource.oci import OciClient

log = logging.getLogger("hotswap.updates")
TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Proposal:
    module: str
    version: str  # without a leading v
    tag: str
    oci: str  # REGISTRY/REPO:TAG@sha256:...


class UpdateAutomation:
    """Checks each ModuleUpdate when it is due; writes a commit or a branch for a newer tag."""

    def __init__(
        self,
        controller: Controller,
        writer: GitWriter,
        oci: OciClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.controller = controller
        self.writer = writer
        self.oci = oci
        self.clock = clock
        self._due: dict[str, float] = {}  # ModuleUpdate name -> when it is checked next
        self._written: dict[str, str] = {}  # ModuleUpdate name -> the version last proposed
        self._failed: dict[str, str] = {}  # ModuleUpdate name -> its last failure, reported once

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(TICK_SECONDS)

    async def tick(self) -> list[Proposal]:
        """Check the updates that are due; the proposals written."""
        revision = self.controller.source.latest
        if not self.controller.leader or revision is None or revision.fleet is None:
            return []
        now = self.clock()
        written = []
        for name, update in revision.fleet.updates.items():
            if self._due.get(name, 0.0) > now:
                continue
            self._due[name] = now + update.spec.interval_seconds
            module = revision.fleet.modules.get(update.spec.module)
            if module is None:
                continue
            try:
                proposal = await asyncio.to_thread(self.check, update, module.spec.version)
                if proposal is None or self._written.get(name) == proposal.version:
                    continue
                result = await asyncio.to_thread(self.write, update, proposal)
            except Exception as exc:  # the registry or the forge failed: say so (once), look again later
                message = f"{update.spec.module}: {update.spec.repository}: {exc}"
                if "working tree" in str(exc) and update.spec.write == "commit":
                    message += "; `write: branch` proposes the bump on a branch instead"
                if self._failed.get(name) != message:
                    self._failed[name] = message
                    self.controller.report("ModuleUpdateFailed", message, update.spec.module, warning=True)
                continue
            self._failed.pop(name, None)
            self._written[name] = proposal.version
            written.append(proposal)
            if result is None:
                continue  # its branch was proposed before and waits for review
            where = f"branch {result.branch} for review" if result.review else result.branch
            message = (
                f"{proposal.module}: {proposal.version} ({proposal.oci}) committed to {where} as {result.sha[:12]}"
            )
            self.controller.report("ModuleUpdateCommitted", message, proposal.module)
            detail = {"commit": result.sha, "branch": result.branch, "version": proposal.version, "oci": proposal.oci}
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(
                    self.controller.store.append_audit,
                    "hotswap-control-plane",
                    "module.updateCommitted",
                    proposal.module,
                    detail,
                )
        return written

    def check(self, update: ModuleUpdate, current: str) -> Proposal | None:
        """The newest tag inside the range and newer than `current`, with its digest; None if none."""
        from reconciler.gitsource.oci import OciClient
        from reconciler.spec.ocireference import Reference

        if self.oci is None:
            self.oci = OciClient()
        registry, _, path = update.spec.repository.partition("/")
        repository = Reference(registry, path)
        allowed = Range(update.spec.semver)
        floor = parse_version(current.split("+", 1)[0])  # build metadata does not order versions
        if floor is None:
            return None  # not a version the automation can compare with: a person bumps it
        newer = [
            (version_key(version), tag)
            for tag in self.oci.tags(repository)
            if (version := parse_version(tag)) is not None
            and version in allowed
            and version_key(version) > version_key(floor)
        ]
        if not newer:
            return None
        tag = max(newer)[1]
        ref = Reference(registry, path, tag=tag)
        digest = self.oci.resolve(ref)
        return Proposal(update.spec.module, tag.removeprefix("v"), tag, str(ref.with_digest(digest)))

    def write(self, update: ModuleUpdate, proposal: Proposal) -> WriteResult | None:
        """The commit (or review branch) that bumps the Module; None when that branch exists already."""

        def edit(root: Path) -> Sequence[str]:
            path = find_document(root, "Module", proposal.module, hint=f"modules/{proposal.module}.yaml")

            def change(doc: CommentedMap) -> None:
                spec = doc["spec"]
                spec["version"] = proposal.version
                spec["source"] = flow_map(oci=proposal.oci)
                spec.pop("sha256", None)  # the old build's pin; the new one is pinned by its digest

            edit_document(path, "Module", proposal.module, change)
            return [str(path.relative_to(root))]

        branch = f"hotswap/update/{proposal.module}-{proposal.version}" if update.spec.write == "branch" else None
        subject = f"{proposal.module}: {proposal.version} from {update.spec.repository}"
        body = (
            f"ModuleUpdate {update.metadata.name} found tag {proposal.tag} in {update.spec.repository}"
            f" (range {update.spec.semver!r}).\n\n{proposal.oci}"
        )
        trailers = [("Hotswap-Module-Update", update.metadata.name)]
        if update.spec.author is not None:
            trailers.insert(0, ("Hotswap-Requested-By", update.spec.author))
        try:
            return self.writer.write(edit, subject, body, trailers, review_branch=branch)
        except GitWriteError as exc:
            if branch is not None and "already exists" in str(exc):
                return None
            raise
