"""Every error the control plane raises on purpose, as one tree.

Where it sits: each part of the control plane defines its errors beside its code (a store error in
`reconciler.store.errors`, a Git source error in `reconciler.gitsource.errors`, ...), and every one of
them descends from `ReconcilerError` here, so a caller that must not let any of them through (the
API's error middleware, a command's `main`) catches one class, and a reader finds them all on this
page. `tests/test_errors.py` checks that the drawing below is the real class tree, both ways.

    ReconcilerError                                 reconciler.errors
    ├── StoreError                                  reconciler.store.errors
    │   ├── NotFoundError                           reconciler.store.errors
    │   │   ├── UnknownModuleError                  reconciler.store.errors
    │   │   └── UnknownBlobError                    reconciler.store.errors
    │   ├── ConflictError                           reconciler.store.errors
    │   │   ├── ModuleConflictError                 reconciler.store.errors
    │   │   ├── ModuleInUseError                    reconciler.store.errors
    │   │   └── StaleRecordError                    reconciler.store.errors
    │   ├── BlobCorruptedError                      reconciler.store.errors
    │   ├── BackendError                            reconciler.store.errors
    │   ├── SchemaTooNewError                       reconciler.store.errors
    │   ├── StoreConfigError                        reconciler.store.errors
    │   └── ObjectMissingError                      reconciler.store.objects
    ├── InvalidModuleError (also a ValueError)      reconciler.store.errors
    ├── StaleBookError                              reconciler.apply.rollouts
    ├── GitSourceError                              reconciler.gitsource.errors
    │   ├── TrustRootError                          reconciler.gitsource.errors
    │   ├── GitCommandError                         reconciler.gitsource.errors
    │   │   └── FetchError                          reconciler.gitsource.errors
    │   ├── ExportError                             reconciler.gitsource.errors
    │   │   └── TooLargeError                       reconciler.gitsource.errors
    │   ├── RewriteNotPendingError                  reconciler.gitsource.errors
    │   ├── ApproveError                            reconciler.gitsource.errors
    │   └── ActingError                             reconciler.gitsource.acting
    ├── GitWriteError                               reconciler.gitsource.gitwrite
    │   └── DocumentNotFoundError                   reconciler.gitsource.gitwrite
    ├── InterfaceError                              reconciler.interfaces.errors
    │   ├── WitError (also a ValueError)            reconciler.interfaces.errors
    │   └── ToolError                               reconciler.interfaces.errors
    ├── OciError                                    reconciler.gitsource.oci
    ├── NotifyError                                 reconciler.notify.errors
    │   ├── ReceiverConfigError                     reconciler.notify.errors
    │   └── DeliveryError                           reconciler.notify.errors
    │       └── PermanentDeliveryError              reconciler.notify.errors
    ├── HubClosedError                              reconciler.apply.nodes
    ├── TokenError                                  reconciler.api.auth
    ├── SessionError                                reconciler.ui.sessions
    ├── StreamsFullError                            reconciler.ui.events
    ├── ApiError                                    reconciler.api.base
    ├── RefNotFoundError                            reconciler.api.diff
    ├── FleetLoadError                              reconciler.api.diff
    ├── ClientError                                 reconciler.commands.client
    └── PortTakenError                              reconciler.commands.ports

What each family means is in its module's docstring. Not in the tree, on purpose: the controller's
signals (`reconciler.apply.binaries.StalledError`: a pass cannot go on until a human acts; `StopReconciling` and its
`NotLeaderError`: end the loop), which are control flow, not failures a caller reports. Invalid input
that is expected (a fleet that does not load, a module that breaks an interface) is not an exception
either: it comes back as data (`Problem`s, `Stalled` conditions) that names the file and the line.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the control plane raises on purpose."""
