"""API writes become signed commits in the fleet repository: a deployment request (a minimal
round-trip YAML edit whose comments survive, on a review branch or on the tracked branch, never into
a working tree), an interface proposal; approvals through the API are refused (409) before any
commit while the trust file does not list the control plane (tests/e2e/test_git_trust.py)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from edge.wat import compile_wat
from reconciler.gitsource.gitwrite import _guess_indent
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll
from tests.git.gitutil import git


def verify(repo: Path, sha: str, public_key: str, tmp: Path) -> str:
    """`git verify-commit` against the control plane's key; the signer line git prints."""
    signers = tmp / "allowed_signers"
    signers.write_text(f"control-plane {public_key}\n")
    done = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", sha],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


async def register(plane: Cluster, name: str, version: str, wat: str) -> str:
    data = compile_wat((plane.repo.fleet / "wasm" / wat).read_text())
    body = {"name": name, "version": version, "wasm": base64.b64encode(data).decode()}
    answer = await call(plane.url, "POST", "/api/v1/wasm/modules", plane.token("developer"), json=body)
    assert answer.status == 201, answer.body
    return str(answer.body["digest"])


async def ready(plane: Cluster) -> None:
    await poll(lambda: plane.plane.source.latest is not None, "the first revision")


async def test_a_deployment_request_is_a_signed_minimal_commit_on_a_review_branch(
    plane: Cluster, tmp_path: Path
) -> None:
    await ready(plane)
    digest = await register(plane, "greeter", "1.2.0", "greeter-1.2.0-faulty.wat")
    before = (plane.repo.fleet / "modules" / "greeter.yaml").read_text()
    body = {"module": "greeter", "version": "1.2.0", "strategy": "blue-green"}
    answer = await call(plane.url, "POST", "/api/v1/wasm/deployments", plane.token("developer", "dora"), json=body)
    assert answer.status == 202, answer.body
    assert answer.body["review"] is True and answer.body["status"] == "PendingReview"
    assert answer.body["id"] == "greeter-v1.2.0"
    branch, sha = answer.body["branch"], answer.body["commit"]
    assert branch.startswith("hotswap/deploy-greeter-1.2.0-")
    repo = plane.repo.root
    assert git(repo, "rev-parse", branch).strip() == sha
    assert (plane.repo.fleet / "modules" / "greeter.yaml").read_text() == before  # main is untouched
    verify(repo, sha, plane.plane.writer.public_key, tmp_path)
    message = git(repo, "log", "-1", "--format=%B", sha)
    assert "Hotswap-Requested-By: dora" in message
    diff = git(repo, "diff", "--unified=0", "main", sha, "--", "fleet/modules/greeter.yaml")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted(changed) == sorted(
        [
            "-  version: 1.1.0                    # module id greeter-v1.1.0",
            "+  version: 1.2.0                    # module id greeter-v1.1.0",
            "-  source: {path: ../wasm/greeter-1.1.0.wat}",
            f"+  source: {{digest: {digest}}}",
            "-  rollout: canary",
            "+  rollout: blue-green",
        ]
    ), diff
    after = git(repo, "show", f"{sha}:fleet/modules/greeter.yaml")
    for comment in ("# yaml-language-server:", "# other versions this fleet may still serve", "# nodes per region"):
        assert comment in after
    audit = plane.plane.store.audit_log(subject="greeter-v1.2.0")
    assert ("dora", "deployment.request") in [(a.actor, a.action) for a in audit]


async def test_with_api_commits_to_branch_the_change_lands_on_the_tracked_branch_never_in_a_working_tree(
    plane: Cluster,
) -> None:
    await ready(plane)
    plane.repo.edit(
        "fleet.yaml",
        "    mergedPullRequestsApprove: true",
        "    mergedPullRequestsApprove: true\n    apiCommitsToBranch: true",
    )
    head = plane.repo.commit("let the API commit to main")
    await poll(lambda: plane.plane.source.latest is not None and plane.plane.source.latest.sha == head, "policy")
    # A version already listed under `versions` is swapped with the current one.
    body = {"module": "greeter", "version": "1.0.0", "regions": ["us-east", "eu-central"]}
    module = plane.repo.fleet / "modules" / "greeter.yaml"
    before = module.read_text()
    refused = await call(plane.url, "POST", "/api/v1/wasm/deployments", plane.token("admin", "ada"), json=body)
    assert refused.status == 409 and "checked out in a working tree" in refused.body["message"], refused.body
    assert git(plane.repo.root, "rev-parse", "main").strip() == head and module.read_text() == before
    git(plane.repo.root, "checkout", "-q", "--detach")  # main is no longer checked out anywhere
    answer = await call(plane.url, "POST", "/api/v1/wasm/deployments", plane.token("admin", "ada"), json=body)
    assert answer.status == 202, answer.body
    assert answer.body["branch"] == "main" and answer.body["review"] is False
    answer_commit = answer.body["commit"]
    assert git(plane.repo.root, "rev-parse", "main").strip() == answer_commit
    assert module.read_text() == before  # the working tree is left alone
    text = git(plane.repo.root, "show", "main:fleet/modules/greeter.yaml")
    assert "  version: 1.0.0" in text and "{version: 1.1.0, source: {path: ../wasm/greeter-1.1.0.wat}}" in text
    assert "    regions: [us-east, eu-central]" in text

    def applied() -> bool:
        latest = plane.plane.source.latest
        return (
            latest is not None and latest.fleet is not None and latest.fleet.modules["greeter"].spec.version == "1.0.0"
        )

    await poll(applied, "the control plane to follow its own commit")
    # Without a trust file listing the control plane, an approval through the API would count for
    # nobody: refused before anything is committed (tests/e2e/test_git_trust.py approves for real).
    answer = await call(
        plane.url, "POST", "/api/v1/wasm/deployments/greeter-v1.0.0/execute", plane.token("admin", "ada")
    )
    assert answer.status == 409 and answer.body["error"] == "untrusted_writer", answer.body
    assert git(plane.repo.root, "rev-parse", "main").strip() == answer_commit


async def test_bad_deployment_requests_name_the_field(plane: Cluster) -> None:
    await ready(plane)
    token = plane.token("developer")
    cases = [
        ({"module": "greeter"}, 400, "version"),
        ({"module": "greeter", "version": "1.2"}, 400, "version"),
        ({"module": "greeter", "version": "9.9.9"}, 409, "upload it first"),
        ({"module": "ghost", "version": "1.0.0"}, 404, "not in the fleet"),
        ({"module": "greeter", "version": "1.0.0", "strategy": "yolo"}, 400, "strategy"),
        ({"module": "greeter", "version": "1.0.0", "regions": ["mars"]}, 400, "regions"),
        ({"module": "greeter", "version": "1.0.0", "extra": 1}, 400, "extra"),
    ]
    for body, status, words in cases:
        answer = await call(plane.url, "POST", "/api/v1/wasm/deployments", token, json=body)
        assert answer.status == status and words in answer.body["message"], (body, answer.body)
    answer = await call(plane.url, "POST", "/api/v1/wasm/deployments", token, data=b"[1]")
    assert answer.status == 400


async def test_interfaces_are_listed_validated_proposed_and_approved(plane: Cluster, tmp_path: Path) -> None:
    await ready(plane)
    viewer, admin = plane.token("viewer"), plane.token("admin", "ada")
    listed = await call(plane.url, "GET", "/api/v1/wasm/interfaces", viewer)
    assert [i["package"] for i in listed.body["interfaces"]] == ["example:greeter@1.0.0", "example:hello@1.0.0"]
    assert [i["implementedBy"] for i in listed.body["interfaces"]] == [["greeter"], ["hello"]]
    one = await call(plane.url, "GET", "/api/v1/wasm/interfaces/greeter", viewer)
    assert "package example:greeter@1.0.0;" in one.body["wit"]

    calc = compile_wat((plane.repo.fleet / "wasm" / "calc-1.0.0.wat").read_text())
    path = "/api/v1/wasm/interfaces/greeter/validate"
    bad = await call(plane.url, "POST", path, viewer, json={"wasm": base64.b64encode(calc).decode()})
    assert bad.status == 200 and bad.body["compatible"] is False
    assert any("greet" in p for p in bad.body["problems"])
    await register(plane, "greeter", "1.3.0", "greeter-1.1.0.wat")
    good = await call(plane.url, "POST", path, viewer, json={"module": "greeter-v1.3.0"})
    assert good.body == {**good.body, "compatible": True, "problems": []}
    assert (await call(plane.url, "POST", path, viewer, json={})).status == 400
    assert (await call(plane.url, "POST", path, viewer, json={"wasm": "AAAA"})).status == 400

    wit = (plane.repo.fleet / "interfaces" / "greeter.wit").read_text()
    broken = wit.replace("  health: func() -> s32;\n", "")
    refused = await call(plane.url, "POST", "/api/v1/wasm/interfaces", admin, json={"name": "greeter", "wit": broken})
    assert refused.status == 409, refused.body  # breaking without a major version bump
    bumped = broken.replace("@1.0.0", "@2.0.0")
    answer = await call(plane.url, "POST", "/api/v1/wasm/interfaces", admin, json={"name": "greeter", "wit": bumped})
    assert answer.status == 202, answer.body
    assert answer.body["needsApproval"] is True and answer.body["package"] == "example:greeter@2.0.0"
    files = git(plane.repo.root, "show", "--format=", "--name-only", answer.body["commit"]).split()
    assert sorted(files) == ["fleet/interfaces/greeter.wit", "fleet/interfaces/greeter.yaml"]
    verify(plane.repo.root, answer.body["commit"], plane.plane.writer.public_key, tmp_path)
    bad_wit = await call(plane.url, "POST", "/api/v1/wasm/interfaces", admin, json={"name": "x", "wit": "nonsense"})
    assert bad_wit.status == 400 and bad_wit.body["field"] == "wit"

    approved = await call(plane.url, "POST", "/api/v1/wasm/interfaces/example:greeter@2.0.0/approve", admin)
    assert approved.status == 409 and approved.body["error"] == "untrusted_writer", approved.body


def test_indentation_is_read_from_the_file() -> None:
    assert _guess_indent("a:\n  b:\n    - x\n") == (2, 4, 2)
    assert _guess_indent("a:\n    b:\n    - x\n") == (4, 2, 0)
