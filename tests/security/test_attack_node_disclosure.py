"""Second outside attack (issue 16, "Done when"): anyone who can reach a managed node reads what
its modules were given, without a token.

A managed node checks tokens on execute only; `GET /api/v1/wasm/modules` (and `/metrics`) answer
anyone, and the modules listing carries every module's `capabilities`, env values included
(`env` is how a fleet hands a module its configuration and secrets), and its filesystem grants.
Production nodes listen on 0.0.0.0 (README "In production"). Seen on a real node: an unauthenticated
`curl http://NODE/api/v1/wasm/modules` printed `'env': {'GREETING': 'hello'}` for greeter.
Safe: the listing needs a token the node accepts (401 without one), or never carries env values.
"""

from __future__ import annotations

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll

SECRET = "s3cr3t-value-of-greeter"


async def test_a_node_does_not_show_module_env_values_without_a_token(cluster: Cluster) -> None:
    cluster.repo.edit("modules/greeter.yaml", "GREETING: hello", f"GREETING: {SECRET}")
    cluster.repo.commit("greeter gets a secret")
    node = cluster.node_urls()["edge-us-east-1"]

    def loaded() -> bool:  # the node applied the table that carries the new env
        table = cluster.plane.hub.table("edge-us-east-1")
        views = {v.id: v for v in cluster.plane.hub.view()}
        return (
            table is not None
            and SECRET in table.model_dump_json()
            and views["edge-us-east-1"].applied_generation == table.generation
        )

    await poll(loaded, "greeter's new env on the node")
    anonymous = await call(node, "GET", "/api/v1/wasm/modules")
    assert SECRET not in str(anonymous.body), "an unauthenticated caller read a module's env value"
    assert anonymous.status == 401, anonymous.status
    reader = await call(node, "GET", "/api/v1/wasm/modules", cluster.edge_token("viewer"))
    assert reader.status == 200 and SECRET not in str(reader.body)
    greeter = next(m for m in reader.body["modules"] if m["module"] == "greeter")
    assert greeter["capabilities"]["env"] == ["GREETING"]  # the names a module gets, never the values
