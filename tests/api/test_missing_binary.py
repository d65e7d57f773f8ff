"""A Module pinned to a digest the registry lacks stalls the controller (`MissingBinary`); uploading
that binary ends the stall: the upload pokes the controller (without it, the stall is looked at again
only on the hub's next health tick, a heartbeat interval later)."""

from __future__ import annotations

import base64

from edge import wasm
from edge.wat import compile_wat
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll


async def test_uploading_the_missing_binary_ends_the_stall(plane: Cluster) -> None:
    source = plane.repo.fleet / "wasm" / "calc-1.1.0.wat"
    data = compile_wat(source.read_text().replace("(module", "(module (global i32 (i32.const 7))", 1))
    digest = wasm.sha256_digest(data)
    plane.repo.edit("modules/calc.yaml", "version: 1.0.0", "version: 1.3.0")
    plane.repo.edit("modules/calc.yaml", "{path: ../wasm/calc-1.0.0.wat}", "{digest: " + digest + "}")
    sha = plane.repo.commit("calc 1.3.0, by digest, not uploaded yet")
    controller = plane.plane.controller

    def stalled() -> bool:
        condition = controller.stalled_condition()
        return condition is not None and condition.reason == "MissingBinary"

    await poll(lambda: (r := plane.plane.source.latest) is not None and r.sha == sha, "the revision")
    await poll(stalled, "the MissingBinary stall")
    passes = controller.state.passes

    body = {"name": "calc", "version": "1.3.0", "wasm": base64.b64encode(data).decode()}
    answer = await call(plane.url, "POST", "/api/v1/wasm/modules", plane.token("developer"), json=body)
    assert answer.status == 201, answer.body
    await poll(
        lambda: controller.stalled_condition() is None and controller.state.passes > passes,
        "a pass after the upload, not stalled",
    )
    assert plane.latest("calc").target.version == "1.3.0"
