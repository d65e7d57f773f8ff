"""The edge node: wasmtime runtime, version router, HTTP server and control-plane agent.

Nothing here imports `reconciler`; the control plane talks to nodes through `edge.protocol`.
"""
