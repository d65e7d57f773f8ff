"""A cluster under a signing policy, set up as people run one: the control plane follows a bare
repository that people push to (never their working tree), a trust file lists real SSH keys
(alice and carol admins, bob a developer, the control plane with `actsFor`), and mallory's key is in
no trust file. The fleet's first commit is signed by alice; people commit in `cluster.repo` with
their own key configured (`use_key`) and `push()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.server import ControlPlane, ServeOptions
from tests.e2e.cluster import Cluster, FleetRepo
from tests.git.gitutil import Key, git, make_key

PEOPLE = {"alice": ["admin"], "carol": ["admin"], "bob": ["developer"]}


@dataclass(frozen=True)
class People:
    alice: Key
    carol: Key
    bob: Key
    mallory: Key
    control_plane: Key


def trust_text(people: People, *, control_plane: bool = True) -> str:
    lines = ["requireSignedCommits: true", "principals:"]
    for name, roles in PEOPLE.items():
        key: Key = getattr(people, name)
        lines.append(f'  - {{name: {name}@example.com, roles: [{", ".join(roles)}], keys: ["{key.public}"]}}')
    if control_plane:
        lines.append(
            "  - {name: hotswap-control-plane, actsFor: [admin, developer, operator], "
            f'keys: ["{people.control_plane.public}"]}}'
        )
    return "\n".join(lines) + "\n"


def use_key(repo: FleetRepo, key: Key) -> None:
    """Set the checkout up to sign as `key` (what each person's own git configuration does)."""
    git(repo.root, "config", "gpg.format", "ssh")
    git(repo.root, "config", "user.signingkey", str(key.private))


def push(repo: FleetRepo) -> str:
    git(repo.root, "push", "-q", "origin", "HEAD:refs/heads/main")
    return git(repo.root, "rev-parse", "HEAD").strip()


async def start_signed_cluster(
    tmp: Path,
    regions: list[tuple[str, str]],
    *,
    approvals: str = "{}",
    control_plane_trusted: bool = True,
) -> tuple[Cluster, People]:
    keys = tmp / "keys"
    people = People(*(make_key(keys, n) for n in ("alice", "carol", "bob", "mallory", "control-plane")))
    trust = tmp / "trust.yaml"
    trust.write_text(trust_text(people, control_plane=control_plane_trusted))
    repo = FleetRepo(tmp / "repo")
    repo.edit("fleet.yaml", "requireSignedCommits: false", "requireSignedCommits: true")
    repo.edit("fleet.yaml", "approvals: {}", f"approvals: {approvals}")
    repo.commit("signed fleet", key=people.alice.private)
    remote = tmp / "fleet.git"
    git(tmp, "clone", "-q", "--bare", str(repo.root), str(remote))
    git(repo.root, "remote", "add", "origin", str(remote))
    git(repo.root, "fetch", "-q", "origin")
    git(repo.root, "branch", "-q", "--set-upstream-to=origin/main", "main")
    data = tmp / "data"
    data.mkdir()
    plane = ControlPlane(
        ServeOptions(
            repo=str(remote),
            path="fleet",
            data_dir=data / "control",
            trust=trust,
            git_signing_key=people.control_plane.private,
            interval=0.5,
            heartbeat_seconds=0.25,
            port=0,  # a free port: 8080, the default, may be taken on the machine
        )
    )
    await plane.start()
    cluster = Cluster(repo, plane, data)
    for node_id, region in regions:
        cluster.start_node(node_id, region)
    return cluster, people
