"""A node run with `--control-plane-key` serves only tables that key signed: with the control plane's
own key it serves as any node; pinned to another key, it refuses every table the control plane sends
(saying why), serves nothing from them, and keeps no table on disk."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.cluster import poll, start_cluster, stop_cluster


def stranger_pem(path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


async def test_a_pinned_key_is_checked_on_every_table_the_control_plane_sends(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [])
    try:
        own = tmp_path / "control-plane.pem"
        own.write_text(cluster.plane.authority.public_key_pem)
        trusting = cluster.start_node("edge-eu-central-1", "eu-central", flags=["--control-plane-key", str(own)])
        pinned_elsewhere = cluster.start_node(
            "edge-us-east-1", "us-east", flags=["--control-plane-key", str(stranger_pem(tmp_path / "other.pem"))]
        )
        await cluster.wait_all_serving("greeter", "1.1.0", [trusting.node_id])
        kept = cluster.data / "cache" / trusting.node_id / "nodes" / trusting.node_id / "table.json"
        await poll(kept.exists, "the trusting node to keep its table")

        await poll(
            lambda: b"refusing the table the control plane sent" in pinned_elsewhere.log.read_bytes(),
            "the node pinned to another key to refuse its table",
        )
        assert "its signature does not verify with the control plane's key" in pinned_elsewhere.log.read_text()
        assert cluster.serving("greeter")[pinned_elsewhere.node_id] == set()  # nothing from the refused table
        assert pinned_elsewhere.process.poll() is None  # still up, still asking
        gone = cluster.data / "cache" / pinned_elsewhere.node_id / "nodes" / pinned_elsewhere.node_id / "table.json"
        assert not gone.exists()
    finally:
        await stop_cluster(cluster)


async def test_a_pinned_node_ahead_of_a_control_plane_that_lost_state_takes_its_table_again(tmp_path: Path) -> None:
    """A pinned node takes only tables numbered past the one it applied (an older one could be a replay).
    When the control plane's store was restored from a backup, the node's row is behind what the node
    applied: the node registers again when it reaches the restarted control plane (or when it refuses
    the older number), and the store numbers the row on past the node's, so the node takes its table
    again instead of refusing it for good."""
    cluster = await start_cluster(tmp_path, [])
    try:
        own = tmp_path / "control-plane.pem"
        own.write_text(cluster.plane.authority.public_key_pem)
        node = cluster.start_node("edge-eu-central-1", "eu-central", flags=["--control-plane-key", str(own)])
        await cluster.wait_ready(1)
        hub = cluster.plane.hub
        assert await hub.set_draining(node.node_id, True)  # an empty table, then the modules back: two more
        await poll(lambda: cluster.serving("greeter")[node.node_id] == set(), "the drained node to unload greeter")
        assert await hub.set_draining(node.node_id, False)
        await cluster.wait_all_serving("greeter", "1.1.0", [node.node_id])
        applied = hub.views_of([node.node_id])[0].applied_generation
        assert applied >= 2

        await cluster.stop_control_plane()
        # the row as a backup would have it: a table the node applied long ago
        with contextlib.closing(sqlite3.connect(cluster.plane.options.data_dir / "state.db")) as db, db:
            db.execute("UPDATE nodes SET generation = ? WHERE id = ?", (applied - 1, node.node_id))
        await cluster.start_control_plane()

        def numbered_past() -> bool:
            views = cluster.plane.hub.views_of([node.node_id])
            return bool(views) and views[0].applied_generation == views[0].generation == applied + 1

        await poll(numbered_past, "the node to take its table again, numbered past its own")
        await cluster.wait_all_serving("greeter", "1.1.0", [node.node_id])
    finally:
        await stop_cluster(cluster)
