"""What can go wrong in the stores and the registry built on them.

    StoreError                          any failure of the state or blob store
    ├── NotFoundError                   no such record or object (HTTP 404)
    │   ├── UnknownModuleError
    │   └── UnknownBlobError
    ├── ConflictError                   the request contradicts what is stored (HTTP 409)
    │   ├── ModuleConflictError         same module id, different bytes (a version is immutable)
    │   ├── ModuleInUseError            desired state or a rollout still uses the module
    │   └── StaleRecordError            a compare-and-set update lost the race (re-read, re-plan)
    ├── BlobCorruptedError              a stored object's SHA-256 does not match: never served
    ├── BackendError                    the database or object store failed (connection lost, disk
    │                                   full, permission): usually transient, retry with backoff
    ├── SchemaTooNewError               the database was migrated by a newer hotswap
    └── StoreConfigError                a bad --database-url / --blob-url
    InvalidModuleError (ValueError)     a registration request is refused (HTTP 400); names the field

Messages are written for the person who sent the request: they name the module, the field, or the
object, and say what to do when there is something to do.
"""

from __future__ import annotations

from reconciler.errors import ReconcilerError


class StoreError(ReconcilerError):
    """Base of every store failure; `message` is the human text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(StoreError):
    pass


class UnknownModuleError(NotFoundError):
    def __init__(self, module_id: str) -> None:
        super().__init__(f"module {module_id!r} is not registered")
        self.module_id = module_id


class UnknownBlobError(NotFoundError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"no stored binary has digest {digest}")
        self.digest = digest


class ConflictError(StoreError):
    pass


class ModuleConflictError(ConflictError):
    def __init__(self, module_id: str, stored: str, offered: str) -> None:
        super().__init__(
            f"module {module_id!r} is already registered with digest {stored}; a version is immutable, "
            f"so different bytes ({offered}) need a new version"
        )
        self.module_id = module_id
        self.stored = stored
        self.offered = offered


class ModuleInUseError(ConflictError):
    def __init__(self, module_id: str) -> None:
        super().__init__(f"module {module_id!r} is used by the desired state or a rollout; it cannot be deleted")
        self.module_id = module_id


class StaleRecordError(ConflictError):
    def __init__(self, kind: str, key: str, generation: int) -> None:
        super().__init__(f"{kind} {key!r} changed since generation {generation} was read")
        self.kind = kind
        self.key = key
        self.generation = generation


class BlobCorruptedError(StoreError):
    def __init__(self, digest: str, detail: str) -> None:
        super().__init__(f"stored binary {digest} is corrupted ({detail}); upload the module again to repair it")
        self.digest = digest


class BackendError(StoreError):
    pass


class SchemaTooNewError(StoreError):
    pass


class StoreConfigError(StoreError):
    pass


class InvalidModuleError(ReconcilerError, ValueError):
    """A registration request that cannot be accepted; `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"
