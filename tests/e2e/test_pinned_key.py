"""A node run with `--control-plane-key` serves only tables that key signed: with the control plane's
own key it serves as any node; pinned to another key, it refuses every table the control plane sends
(saying why), serves nothing from them, and keeps no table on disk."""

from __future__ import annotations

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
