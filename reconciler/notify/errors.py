"""Why a notification was not delivered.

NotifyError
├── ReceiverConfigError     an alert's receiver cannot be built (an environment variable is unset);
│                           nothing is sent to it, and status says why
└── DeliveryError           one attempt failed and may succeed later (connection refused, 5xx, 429)
    └── PermanentDeliveryError   retrying cannot help (401, 404, a refused SMTP login or recipient)
"""

from __future__ import annotations

from reconciler.errors import ReconcilerError


class NotifyError(ReconcilerError):
    """Base of the notifier's errors; the message is for people."""


class ReceiverConfigError(NotifyError):
    pass


class DeliveryError(NotifyError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass
