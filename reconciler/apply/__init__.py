"""Applying the plan: the reconcile loop and everything it moves (below the API, above the planner).

    controller.py     Controller: one pass as named steps (register, gate, plan, save, apply, report)
    executor.py       the only place a pass's plan touches the world (records, tables, events, audit)
    gates.py          interface gates: a breaking WIT change holds back the modules that implement it
    binaries.py       a revision's binaries pulled (OCI sources) and registered before the planner runs
    registry.py       Registry: uploaded bytes -> an immutable, stored, described module version
    rollouts.py       RolloutBook: the planner's rollout records, kept in the state store
    nodes.py          NodeHub: the control plane's side of the node protocol (heartbeats, long-polls)
    noderows.py       a node's row as the hub keeps it, and how rows read back from the store
    tables.py         module tables converted, encoded and signed once per distinct content
    metricswindow.py  metric deltas from heartbeats, kept for an hour and summed over any window
    threadbatch.py    RowBatch: blocking store writes from the loop, one thread hop per batch
    leader.py         Replicas: several control planes on one PostgreSQL, one leads
    updates.py        update automation: a newer OCI tag becomes a signed commit bumping a Module
    telemetry.py      deployment spans, the spec's metrics and JSON logs, observing the objects above

Arrows go down only: `reconciler.api` and `reconciler.notify` use this package; it uses
`reconciler.planner`, `reconciler.interfaces`, `reconciler.gitsource`, `reconciler.store` and
`reconciler.spec` (`.importlinter`'s layers contract holds it).
"""
