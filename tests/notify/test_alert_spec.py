"""The Alert kind: one receiver, known event types, credentials only as environment variable names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.spec.alerts import EVENT_TYPES, Alert, Severity

WEBHOOK = {"url": "https://ops.example.com/hook", "secretEnv": "HOOK_SECRET"}
EMAIL = {
    "to": ["ops@example.com"],
    "from": "hotswap@example.com",
    "smtpHost": "smtp.example.com",
    "usernameEnv": "SMTP_USER",
    "passwordEnv": "SMTP_PASSWORD",
}


def alert(**spec: Any) -> Alert:
    return Alert.model_validate(
        {"apiVersion": "hotswap.dev/v1", "kind": "Alert", "metadata": {"name": "a"}, "spec": spec}
    )


def test_a_webhook_alert_with_defaults_wants_every_event() -> None:
    a = alert(webhook=WEBHOOK)
    assert a.spec.receiver_kind == "webhook"
    assert a.spec.severity is Severity.INFO
    assert all(a.spec.wants(t, Severity.INFO, None) for t in EVENT_TYPES)


def test_email_fields_use_camel_case_and_from() -> None:
    a = alert(email=EMAIL)
    assert a.spec.email is not None
    assert a.spec.email.from_ == "hotswap@example.com"
    assert a.spec.email.smtp_port == 587 and a.spec.email.starttls
    dumped = a.model_dump(by_alias=True)
    assert dumped["spec"]["email"]["from"] == "hotswap@example.com"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({}, "exactly one receiver"),
        ({"webhook": WEBHOOK, "slack": {"urlEnv": "SLACK_URL"}}, "found webhook, slack"),
        ({"webhook": {"url": "ftp://x"}}, "url"),
        ({"webhook": {"url": "https://x", "secret": "inline"}}, "secret"),
        ({"slack": {"urlEnv": "not a name"}}, "urlEnv"),
        ({"webhook": WEBHOOK, "eventTypes": ["rollout.exploded"]}, "'rollout.exploded' is not an event type"),
        ({"webhook": WEBHOOK, "eventTypes": ["widget.*"]}, "not an event type"),
        ({"webhook": WEBHOOK, "severity": "critical"}, "severity"),
        ({"webhook": WEBHOOK, "modules": ["Bad_Name"]}, "modules"),
        ({"email": {**EMAIL, "to": []}}, "to"),
        ({"email": {**EMAIL, "to": ["not-an-address"]}}, "to"),
        ({"email": {**EMAIL, "passwordEnv": None}}, "both `usernameEnv` and `passwordEnv`"),
        ({"email": {**EMAIL, "starttls": False}}, "need `starttls: true`"),
        ({"email": {**EMAIL, "smtpPort": 0}}, "smtpPort"),
        ({"email": {**EMAIL, "password": "hunter2"}}, "password"),
    ],
)
def test_bad_alerts_say_what_is_wrong(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        alert(**spec)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("filters", "event", "wanted"),
    [
        ({"eventTypes": ["rollout.rolledBack"]}, ("rollout.rolledBack", "error", "greeter"), True),
        ({"eventTypes": ["rollout.rolledBack"]}, ("rollout.promoted", "info", "greeter"), False),
        ({"eventTypes": ["rollout.*"]}, ("rollout.promoted", "info", "greeter"), True),
        ({"eventTypes": ["rollout.*"]}, ("node.unhealthy", "error", None), False),
        ({"eventTypes": ["*"]}, ("scaling.scaleUp", "warning", None), True),
        ({"severity": "warning"}, ("rollout.promoted", "info", "greeter"), False),
        ({"severity": "warning"}, ("rollout.rolledBack", "error", "greeter"), True),
        ({"severity": "error"}, ("rollout.awaitingApproval", "warning", "greeter"), False),
        ({"modules": ["greeter"]}, ("rollout.started", "info", "greeter"), True),
        ({"modules": ["greeter"]}, ("rollout.started", "info", "calc"), False),
        ({"modules": ["greeter"]}, ("node.unhealthy", "error", None), False),
    ],
)
def test_filters(filters: dict[str, Any], event: tuple[str, str, str | None], wanted: bool) -> None:
    kind, severity, module = event
    assert alert(webhook=WEBHOOK, **filters).spec.wants(kind, Severity(severity), module) is wanted


def test_alert_is_a_fleet_kind() -> None:
    from reconciler.spec.alerts import FLEET_KINDS

    assert FLEET_KINDS["Alert"] is Alert and {"Fleet", "Module", "RolloutStrategy", "Interface"} <= set(FLEET_KINDS)
    schema = Alert.model_json_schema(by_alias=True)
    assert "from" in schema["$defs"]["EmailReceiver"]["properties"]
