"""Notifications, alerting and scaling signals: tell people (and autoscalers) when the fleet needs them.

Package map, in the order an event travels:

    events.py     Notification (stable type, severity, module, version, deployment, revision, action)
                  and the mapping from the controller's event reasons
    watch.py      SourceWatcher, NodeWatcher: polled state (Git source conditions, node health and
                  capacity) turned into notifications on change
    scaling.py    ScalingEvaluator: the spec's auto-scaling triggers per region (pure, clock passed in)
    receivers.py  webhook (HMAC-signed), Slack-compatible webhook, SMTP email with STARTTLS
    delivery.py   Worker: one bounded queue per alert, retries with backoff, Ready/Failing state
    notifier.py   Notifier: the controller listener, the tick loop, routing, status (a plane builds its
                  own: `ControlPlane.install_notifier`)
    errors.py     the exception tree

Alerts are fleet documents (`reconciler.spec.alerts.Alert`); credentials come from the control
plane's environment only.
"""

from reconciler.notify.delivery import Delivery, RetryPolicy
from reconciler.notify.events import Notification
from reconciler.notify.notifier import Notifier, Observed, Settings
from reconciler.notify.receivers import SIGNATURE_HEADER, sign, verify_signature
from reconciler.notify.scaling import NodeSample, ScalingEvaluator, Signal, Thresholds, Trigger

__all__ = [
    "SIGNATURE_HEADER",
    "Delivery",
    "NodeSample",
    "Notification",
    "Notifier",
    "Observed",
    "RetryPolicy",
    "ScalingEvaluator",
    "Settings",
    "Signal",
    "Thresholds",
    "Trigger",
    "sign",
    "verify_signature",
]
