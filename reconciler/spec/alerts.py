"""The `Alert` kind: which control-plane events reach whom (issue 12).

Where it sits: an Alert is one more fleet document (`kind: Alert`), read by the loader with the other
kinds and handed to `reconciler.notify.Notifier`, which routes every event to the alerts it matches
and delivers it to the alert's one receiver. Receivers never hold credentials: a webhook's HMAC
secret, a Slack URL (its token is in the path) and SMTP credentials are the *names* of environment
variables of the control plane, so a secret never enters Git.

```yaml
apiVersion: hotswap.dev/v1
kind: Alert
metadata: {name: on-call}
spec:
  eventTypes: [rollout.rolledBack, rollout.awaitingApproval, source.*]   # empty or omitted: every type
  severity: warning                   # the lowest severity delivered: info | warning | error
  modules: [greeter]                  # empty: every module (and events about no module)
  webhook: {url: https://ops.example.com/hooks/hotswap, secretEnv: HOTSWAP_ALERT_SECRET}
  # or slack: {urlEnv: SLACK_WEBHOOK_URL}
  # or email: {to: [ops@example.com], from: hotswap@example.com, smtpHost: smtp.example.com,
  #            smtpPort: 587, starttls: true, usernameEnv: SMTP_USER, passwordEnv: SMTP_PASSWORD}
```
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import Annotated, Final, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from reconciler.spec.fields import Name, Spec
from reconciler.spec.models import KINDS, Document
from reconciler.spec.updates import ModuleUpdate

EVENT_TYPES: Final = (
    "rollout.started",
    "rollout.stepStarted",
    "rollout.stepPassed",
    "rollout.awaitingApproval",
    "rollout.approved",
    "rollout.paused",
    "rollout.degraded",
    "rollout.rolledBack",
    "rollout.promoted",
    "rollout.superseded",
    "rollout.event",
    "source.stalled",
    "source.recovered",
    "node.unhealthy",
    "node.recovered",
    "capacity.reached",
    "scaling.scaleUp",
    "scaling.scaleDown",
    "scaling.cleared",
)
"""Every event type the notifier emits; an Alert names them, or a group as `rollout.*`, or `*`."""

EVENT_GROUPS: Final = frozenset(t.split(".", 1)[0] for t in EVENT_TYPES)

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
EmailAddress = Annotated[str, StringConstraints(pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")]


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


class WebhookReceiver(Spec):
    """A generic JSON webhook; the body is signed with HMAC-SHA256 (`X-Hotswap-Signature: sha256=...`)."""

    url: str = Field(pattern=r"^https?://[^\s/]+", description="where events are POSTed as JSON")
    secret_env: EnvName | None = Field(
        None, description="environment variable holding the HMAC secret; without it the body is not signed"
    )


class SlackReceiver(Spec):
    """A Slack-compatible incoming webhook; its URL (which carries a token) comes from the environment."""

    url_env: EnvName = Field(description="environment variable holding the incoming-webhook URL")


class EmailReceiver(Spec):
    """Email over SMTP; credentials come from environment variables, and only travel over STARTTLS."""

    to: list[EmailAddress] = Field(min_length=1)
    from_: EmailAddress = Field(alias="from")
    smtp_host: str = Field(min_length=1, pattern=r"^[^\s/:]+$")
    smtp_port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username_env: EnvName | None = None
    password_env: EnvName | None = None

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("give both `usernameEnv` and `passwordEnv`, or neither")
        if self.username_env is not None and not self.starttls:
            raise ValueError("SMTP credentials need `starttls: true` (they never travel in clear text)")
        return self


ReceiverKind = Literal["webhook", "slack", "email"]


class AlertSpec(Spec):
    event_types: list[str] = Field(
        default_factory=list, description="event types (or `group.*`, or `*`) delivered; empty: all"
    )
    severity: Severity = Field(Severity.INFO, description="the lowest severity delivered")
    modules: list[Name] = Field(default_factory=list, description="modules whose events are delivered; empty: all")
    webhook: WebhookReceiver | None = None
    slack: SlackReceiver | None = None
    email: EmailReceiver | None = None

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, values: list[str]) -> list[str]:
        for value in values:
            if value == "*" or value in EVENT_TYPES:
                continue
            if value.endswith(".*") and value[:-2] in EVENT_GROUPS:
                continue
            close = difflib.get_close_matches(value, [*EVENT_TYPES, *(f"{g}.*" for g in EVENT_GROUPS)], n=1)
            if close:
                raise ValueError(f"{value!r} is not an event type; did you mean {close[0]!r}?")
            known = ", ".join(EVENT_TYPES)
            raise ValueError(f"{value!r} is not an event type; use one of {known}, a group like rollout.*, or *")
        return values

    @model_validator(mode="after")
    def _one_receiver(self) -> Self:
        given = [name for name in ("webhook", "slack", "email") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one receiver: `webhook`, `slack` or `email`"
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self

    @property
    def receiver_kind(self) -> ReceiverKind:
        if self.webhook is not None:
            return "webhook"
        return "slack" if self.slack is not None else "email"

    def wants(self, event_type: str, severity: Severity, module: str | None) -> bool:
        """Whether an event of this type, severity and module is delivered by this alert."""
        if severity.rank < self.severity.rank:
            return False
        if self.modules and module not in self.modules:
            return False
        if not self.event_types:
            return True
        group = event_type.split(".", 1)[0]
        return any(t in ("*", event_type, f"{group}.*") for t in self.event_types)


class Alert(Document):
    kind: Literal["Alert"] = "Alert"
    spec: AlertSpec


FLEET_KINDS: Final[dict[str, type[Document]]] = {**KINDS, "Alert": Alert, "ModuleUpdate": ModuleUpdate}
"""Every kind a fleet document may have, Alert and ModuleUpdate included (`models` cannot import them)."""
