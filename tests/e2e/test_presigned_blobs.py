"""A control plane whose blobs are in S3: real edge node processes load every binary from S3 itself.

The control plane (`hotswap serve` in-process, `--blob-url` through `tests.s3front` to moto_server)
answers the nodes' blob requests with presigned URLs; the front records what reached S3. Each
binary a node runs must have been read there by a presigned GET that carried no Authorization
header: with the redirect gone, the control plane's own signed reads would be the only ones.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from reconciler.store.blobs import BLOBS_PREFIX, digest_hex
from tests.e2e.cluster import start_cluster, stop_cluster
from tests.s3front import running_front
from tests.services import S3Server

NODES = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]


async def test_nodes_load_their_binaries_through_presigned_urls(tmp_path: Path, s3_server: S3Server) -> None:
    with running_front(s3_server) as front:
        cluster = await start_cluster(tmp_path, NODES, blob_url=front.url(f"e2e-{uuid.uuid4().hex[:12]}"))
        try:
            await cluster.wait_ready(len(NODES))
            await cluster.wait_all_serving("calc", "1.0.0", [n for n, _ in NODES])
            running = {(view.id, digest) for view in cluster.plane.hub.view() for _, _, digest, _ in view.running}
            assert {n for n, _ in running} == {n for n, _ in NODES}
            seen = front.requests()
            for node_id, digest in running:
                key = BLOBS_PREFIX + digest_hex(digest)
                direct = [r for r in seen if r.reads(key) and r.presigned and r.status == 200]
                assert direct, f"{node_id} runs {digest}, but no presigned GET of it reached S3"
                assert all("Authorization" not in r.headers for r in direct)
            assert not [r for r in seen if any("Bearer" in v for v in r.headers.values())]  # no node token
        finally:
            await stop_cluster(cluster)
