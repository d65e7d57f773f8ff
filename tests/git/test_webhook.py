"""POST /api/v1/wasm/webhook: HMAC-checked, and a good one makes the Git source fetch at once."""

from __future__ import annotations

import asyncio
import io
import json
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from reconciler.gitsource.source import Revision
from reconciler.gitsource.webhook import WEBHOOK_PATH, sign, webhook_handler
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Workspace

SECRET = "s3cret"


async def client_for(trigger: object, branch: str | None = "main") -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, webhook_handler(SECRET, trigger, branch=branch))  # type: ignore[arg-type]
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_wrong_or_missing_hmac_is_refused_with_401() -> None:
    calls: list[int] = []
    client = await client_for(lambda: calls.append(1))
    try:
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        wrong = await client.post(WEBHOOK_PATH, data=body, headers={"X-Hub-Signature-256": sign("other", body)})
        assert wrong.status == 401
        assert "does not match" in (await wrong.json())["message"]
        missing = await client.post(WEBHOOK_PATH, data=body)
        assert missing.status == 401
        tampered = await client.post(
            WEBHOOK_PATH, data=body + b" ", headers={"X-Hotswap-Signature": sign(SECRET, body)}
        )
        assert tampered.status == 401
        assert calls == []
    finally:
        await client.close()


async def test_generic_header_and_bare_hex_are_accepted() -> None:
    calls: list[int] = []
    client = await client_for(lambda: calls.append(1), branch=None)
    try:
        body = b""
        bare_hex = sign(SECRET, body).removeprefix("sha256=")
        response = await client.post(WEBHOOK_PATH, data=body, headers={"X-Hotswap-Signature": bare_hex})
        assert response.status == 202 and (await response.json())["triggered"] is True
        assert calls == [1]
    finally:
        await client.close()


async def test_other_branch_ping_and_bad_json_do_not_trigger() -> None:
    calls: list[int] = []
    client = await client_for(lambda: calls.append(1))
    try:
        other = json.dumps({"ref": "refs/heads/feature"}).encode()
        response = await client.post(WEBHOOK_PATH, data=other, headers={"X-Hub-Signature-256": sign(SECRET, other)})
        assert response.status == 202 and (await response.json())["triggered"] is False
        ping = b"{}"
        response = await client.post(
            WEBHOOK_PATH, data=ping, headers={"X-Hub-Signature-256": sign(SECRET, ping), "X-GitHub-Event": "ping"}
        )
        assert response.status == 200 and (await response.json())["message"] == "pong"
        junk = b"{not json"
        response = await client.post(WEBHOOK_PATH, data=junk, headers={"X-Hub-Signature-256": sign(SECRET, junk)})
        assert response.status == 400
        big = b"x" * (1024 * 1024 + 10)
        response = await client.post(
            WEBHOOK_PATH, data=io.BytesIO(big), headers={"X-Hub-Signature-256": sign(SECRET, big)}
        )
        assert response.status == 413
        assert calls == []
    finally:
        await client.close()


async def test_right_hmac_triggers_a_fetch_of_the_new_commit(ws: Workspace, keys: Keys) -> None:
    remote = ws.remote()
    repo = seeded_repo(ws, keys)
    repo.git("remote", "add", "origin", str(remote))
    repo.push("origin")
    source = source_for(ws, remote, standard_trust(keys), interval=3600.0)  # only the webhook wakes it
    seen: list[Revision] = []

    async def on_revision(revision: Revision) -> None:
        seen.append(revision)

    task = asyncio.create_task(source.run(on_revision))
    client = await client_for(source.trigger)
    try:
        deadline = time.monotonic() + 20
        while not seen:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        repo.write("README.md", "pushed\n")
        head = repo.commit("pushed", key=keys.alice)
        repo.push("origin")
        fetches = source.fetches
        body = json.dumps({"ref": "refs/heads/main", "after": head}).encode()
        response = await client.post(WEBHOOK_PATH, data=body, headers={"X-Hub-Signature-256": sign(SECRET, body)})
        assert response.status == 202
        while seen[-1].sha != head:
            assert time.monotonic() < deadline, "the webhook did not lead to a fetch"
            await asyncio.sleep(0.02)
        assert source.fetches > fetches
    finally:
        await client.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
