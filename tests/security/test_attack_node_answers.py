"""Second outside attack (issue 16, "Done when"): a process holding a node token answers the calls
the control plane forwards to it with a huge body.

`POST /api/v1/wasm/execute` on the control plane reads the node's whole answer into memory
(`await answer.read()`, no limit) and hands it to the caller. Seen on real processes: one call whose
rogue node answered 400 MiB raised the control plane's RSS from 115 MB to a peak of 1.37 GB and
passed all 400 MiB on to the caller; a few such calls at once exhaust the control plane's memory.
Safe: the control plane reads a node's answer only up to a bound (the size of an execute body,
8 MiB, is the obvious one); beyond it the call fails (502) or goes to another node.
"""

from __future__ import annotations

from aiohttp import web

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll
from tests.security.test_node_tokens import EXECUTE, RogueNode

ANSWER_BYTES = 64 << 20  # what the rogue node answers with
BOUND = 8 << 20  # reconciler.api.execute.EXECUTE_BODY_BYTES: what a call may carry the other way


class HugeAnswerNode(RogueNode):
    """A rogue node whose every forwarded call is answered with ANSWER_BYTES of JSON."""

    async def _execute(self, request: web.Request) -> web.StreamResponse:  # type: ignore[override]
        self.captured.append(request.headers.get("Authorization", ""))
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"result": "')
        chunk = b"a" * (1 << 20)
        for _ in range(ANSWER_BYTES >> 20):
            await response.write(chunk)
        await response.write(b'", "module": "calc", "version": "1.0.0", "durationMs": 0}')
        await response.write_eof()
        return response


async def test_a_node_cannot_flood_the_control_plane_through_a_forwarded_answer(cluster: Cluster) -> None:
    rogue = HugeAnswerNode(cluster, "edge-rogue", "us-east")
    await rogue.start()
    try:

        async def assigned() -> bool:
            await rogue.heartbeat()
            return any(e["module"] == "calc" for e in rogue.table)

        await poll(assigned, "calc assigned to the rogue node")
        body = {"module": "calc", "function": "add", "args": [1, 2]}
        answers = []
        for _ in range(6):  # calls rotate over the candidates: the rogue node gets some
            answers.append(await call(cluster.url, "POST", EXECUTE, cluster.token("developer"), json=body))
        assert rogue.captured, "the control plane never forwarded a call to the rogue node"
        for answer in answers:
            size = len(answer.body) if isinstance(answer.body, bytes) else len(str(answer.body))
            assert size <= BOUND, f"the control plane read and passed on a {size}-byte node answer"
            if answer.headers.get("X-Hotswap-Node") == "edge-rogue":
                assert answer.status == 502, answer.status
    finally:
        await rogue.stop()
