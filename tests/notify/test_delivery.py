"""Delivery to real local receivers: signed webhooks, Slack payloads, email over STARTTLS, retries,
receivers that are down or misconfigured, and the record of every outcome."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from reconciler.apply.executor import Event
from reconciler.notify import Notifier, RetryPolicy, Settings, sign, verify_signature
from reconciler.notify.events import Notification
from reconciler.spec.alerts import Alert, Severity
from reconciler.store.state import StateStore
from tests.notify.conftest import SECRET, HttpReceiver, SmtpServer, free_port, until

NOW = 1_800_000_000.0
FAST = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02, queue_size=20)


def make_alert(name: str, receiver: dict[str, Any], **spec: Any) -> Alert:
    return Alert.model_validate({"metadata": {"name": name}, "spec": {**spec, **receiver}})


def webhook(receiver: HttpReceiver, path: str = "/hook", secret_env: str | None = "HOOK_SECRET") -> dict[str, Any]:
    return {"webhook": {"url": receiver.url(path), **({"secretEnv": secret_env} if secret_env else {})}}


def event(reason: str = "Promoted", module: str = "greeter", message: str = "greeter: 1.2.0 is stable") -> Event:
    return Event(NOW, reason, message, module, None)


@pytest.fixture
async def notifiers() -> AsyncIterator[Callable[..., Notifier]]:
    started: list[Notifier] = []

    def make(alerts: list[Alert], env: dict[str, str] | None = None, **kw: Any) -> Notifier:
        settings = kw.pop("settings", Settings(retry=FAST, tick_seconds=None, drain_seconds=0.5))
        notifier = Notifier(alerts, env=env if env is not None else {"HOOK_SECRET": SECRET}, settings=settings, **kw)
        notifier.start()
        started.append(notifier)
        return notifier

    yield make
    for notifier in started:
        await notifier.stop()


async def test_a_webhook_gets_signed_json(http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]) -> None:
    notifier = notifiers([make_alert("ops", webhook(http_receiver))])
    notifier.on_event(event())
    await until(lambda: len(http_receiver.requests) == 1, "one webhook request")
    [got] = http_receiver.requests
    assert got.verified
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Hotswap-Event"] == "rollout.promoted"
    body = got.json
    assert body["type"] == "rollout.promoted" and body["module"] == "greeter" and body["severity"] == "info"
    assert got.headers["X-Hotswap-Delivery"] == body["id"]
    await until(lambda: notifier.status()["deliveries"] != [], "the delivery record")
    [delivery] = notifier.status()["deliveries"]
    assert (delivery["outcome"], delivery["attempts"], delivery["type"]) == ("delivered", 1, "rollout.promoted")


async def test_a_wrong_secret_is_detected_by_the_receiver(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    http_receiver.require_signature = True
    notifier = notifiers([make_alert("ops", webhook(http_receiver))], env={"HOOK_SECRET": "not-the-secret"})
    notifier.on_event(event())
    await until(lambda: notifier.status()["receivers"][0]["state"] == "Failing", "the receiver to be failing")
    [got] = http_receiver.requests  # a 401 is permanent: no retry
    assert not got.verified
    assert not verify_signature(got.body, got.headers["X-Hotswap-Signature"], SECRET)
    assert verify_signature(got.body, got.headers["X-Hotswap-Signature"], "not-the-secret")
    status = notifier.status()["receivers"][0]
    assert "HTTP 401" in status["lastError"] and status["failed"] == 1 and status["attempts"] == 1


def test_signatures_cover_every_byte() -> None:
    body = b'{"type":"rollout.promoted"}'
    header = sign(body, SECRET)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(body, header, SECRET)
    assert not verify_signature(body + b" ", header, SECRET)
    assert not verify_signature(body, None, SECRET)


async def test_an_unsigned_webhook_has_no_signature(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    notifiers([make_alert("plain", webhook(http_receiver, secret_env=None))]).on_event(event())
    await until(lambda: len(http_receiver.requests) == 1, "one request")
    assert "X-Hotswap-Signature" not in http_receiver.requests[0].headers


async def test_slack_gets_text_and_blocks(http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]) -> None:
    alert = make_alert("chat", {"slack": {"urlEnv": "SLACK_URL"}})
    notifier = notifiers([alert], env={"SLACK_URL": http_receiver.url("/services/T000/B000/XXXX")})
    notifier.on_event(event("RolledBack", message="greeter: back to 1.1.0: error rate 40.00% is above 5.00%"))
    await until(lambda: len(http_receiver.requests) == 1, "the Slack message")
    body = http_receiver.requests[0].json
    assert body["text"].startswith("[hotswap error] rollout.rolledBack greeter")
    assert "error rate 40.00%" in body["text"]
    assert [b["type"] for b in body["blocks"]][:3] == ["section", "section", "context"]
    target = notifier.status()["receivers"][0]["target"]
    assert "XXXX" not in target and target.startswith("http://127.0.0.1:")  # the URL's token never shows


async def test_email_goes_over_starttls_with_credentials_from_the_environment(
    smtp_server: SmtpServer, notifiers: Callable[..., Notifier]
) -> None:
    alert = make_alert(
        "mail",
        {
            "email": {
                "to": ["approvers@example.com", "ops@example.com"],
                "from": "hotswap@example.com",
                "smtpHost": "127.0.0.1",
                "smtpPort": smtp_server.port,
                "usernameEnv": "SMTP_USER",
                "passwordEnv": "SMTP_PASSWORD",
            }
        },
    )
    env = {"SMTP_USER": smtp_server.username, "SMTP_PASSWORD": smtp_server.password}
    settings = Settings(retry=FAST, tick_seconds=None, tls_context=smtp_server.client_tls)
    notifier = notifiers([alert], env=env, settings=settings)
    notification = Notification(
        "rollout.awaitingApproval",
        Severity.WARNING,
        "AwaitingApproval",
        "greeter: step 0 waits for approval",
        NOW,
        module="greeter",
        version="1.2.0",
        action="hotswap approve greeter@1.2.0",
    )
    notifier.publish(notification)
    await until(lambda: len(smtp_server.mails) == 1, "one mail")
    [mail] = smtp_server.mails
    assert mail.tls and mail.login == "hotswap"
    assert mail.rcpt_tos == ["approvers@example.com", "ops@example.com"]
    assert mail.message["Subject"] == "[hotswap warning] rollout.awaitingApproval greeter@1.2.0"
    assert mail.message["X-Hotswap-Delivery"] == notification.id
    assert (
        mail.message["Message-ID"].endswith("@example.com>")
        and parsedate_to_datetime(mail.message["Date"]).timestamp() == NOW
    )
    body = mail.message.get_payload(decode=True)
    assert isinstance(body, bytes) and b"To act: hotswap approve greeter@1.2.0" in body


async def test_a_refused_smtp_login_is_permanent(smtp_server: SmtpServer, notifiers: Callable[..., Notifier]) -> None:
    alert = make_alert(
        "mail",
        {
            "email": {
                "to": ["ops@example.com"],
                "from": "hotswap@example.com",
                "smtpHost": "127.0.0.1",
                "smtpPort": smtp_server.port,
                "usernameEnv": "SMTP_USER",
                "passwordEnv": "SMTP_PASSWORD",
            }
        },
    )
    settings = Settings(retry=FAST, tick_seconds=None, tls_context=smtp_server.client_tls)
    notifier = notifiers([alert], env={"SMTP_USER": "hotswap", "SMTP_PASSWORD": "wrong"}, settings=settings)
    notifier.on_event(event())
    await until(lambda: notifier.status()["receivers"][0]["state"] == "Failing", "a failing mail receiver")
    status = notifier.status()["receivers"][0]
    assert status["attempts"] == 1 and "SMTPAuthenticationError" in status["lastError"]
    assert smtp_server.mails == []


async def test_an_untrusted_smtp_certificate_is_refused(
    smtp_server: SmtpServer, notifiers: Callable[..., Notifier]
) -> None:
    alert = make_alert(
        "mail",
        {
            "email": {
                "to": ["ops@example.com"],
                "from": "h@example.com",
                "smtpHost": "127.0.0.1",
                "smtpPort": smtp_server.port,
            }
        },
    )
    notifier = notifiers([alert], env={})  # the system's CAs do not know the test certificate
    notifier.on_event(event())
    await until(lambda: notifier.status()["receivers"][0]["state"] == "Failing", "a failing mail receiver")
    assert "not trusted" in notifier.status()["receivers"][0]["lastError"]
    assert smtp_server.mails == []


async def test_a_failing_receiver_is_retried_with_backoff_then_reported_not_retried_forever(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    http_receiver.mode = "fail"
    notifier = notifiers([make_alert("ops", webhook(http_receiver))])
    notifier.on_event(event())
    await until(lambda: notifier.status()["receivers"][0]["failed"] == 1, "the first delivery to fail")
    assert len(http_receiver.requests) == FAST.attempts
    status = notifier.status()
    assert status["failing"] == ["ops"]
    receiver = status["receivers"][0]
    assert receiver["state"] == "Failing" and "HTTP 503" in receiver["lastError"]
    assert "down for maintenance" in receiver["lastError"]
    assert status["deliveries"][-1]["attempts"] == FAST.attempts

    notifier.on_event(event("Promoted", module="calc"))  # while failing: one try, no retries
    await until(lambda: notifier.status()["receivers"][0]["failed"] == 2, "the second delivery to fail")
    assert len(http_receiver.requests) == FAST.attempts + 1

    http_receiver.mode = "ok"
    notifier.on_event(event("Promoted", module="wc"))
    await until(lambda: notifier.status()["receivers"][0]["delivered"] == 1, "delivery once the receiver is back")
    receiver = notifier.status()["receivers"][0]
    assert receiver["state"] == "Ready" and receiver["consecutiveFailures"] == 0
    assert notifier.status()["failing"] == []


async def test_a_receiver_that_answers_5xx_then_2xx_is_delivered_on_a_later_try(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    http_receiver.mode = "fail"
    original = http_receiver.handle

    async def recover_after_two(request: Any) -> Any:
        if len(http_receiver.requests) >= 2:
            http_receiver.mode = "ok"
        return await original(request)

    http_receiver.handle = recover_after_two  # type: ignore[method-assign]
    notifier = notifiers([make_alert("ops", webhook(http_receiver))])
    notifier.on_event(event())
    await until(lambda: notifier.status()["receivers"][0]["delivered"] == 1, "a delivery on the third try")
    assert notifier.status()["deliveries"][-1]["attempts"] == 3
    assert notifier.status()["receivers"][0]["state"] == "Ready"


async def test_a_receiver_that_is_down_is_reported_with_the_connection_error(
    notifiers: Callable[..., Notifier],
) -> None:
    port = free_port()  # nothing listens there
    alert = make_alert("gone", {"webhook": {"url": f"http://127.0.0.1:{port}/hook"}})
    notifier = notifiers([alert])
    notifier.on_event(event())
    await until(lambda: notifier.status()["receivers"][0]["state"] == "Failing", "a failing receiver")
    receiver = notifier.status()["receivers"][0]
    assert receiver["attempts"] == FAST.attempts and f"127.0.0.1:{port}" in receiver["lastError"]


async def test_a_hanging_receiver_never_blocks_the_event_source_nor_other_receivers(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    http_receiver.hang_paths = {"/slow"}
    notifier = notifiers(
        [make_alert("slow", webhook(http_receiver, "/slow")), make_alert("fast", webhook(http_receiver))]
    )
    for i in range(15):  # the listener only queues: every call returns while one receiver hangs
        notifier.on_event(event("Promoted", module=f"m{i}"))
    await until(lambda: notifier.status()["receivers"][1]["delivered"] == 15, "every delivery to the fast receiver")
    slow, fast = notifier.status()["receivers"]
    assert len(http_receiver.bodies("/slow")) == 1  # its first request still hangs
    assert (slow["queued"], slow["delivered"], slow["state"]) == (14, 0, "Ready")
    assert (fast["queued"], fast["failed"]) == (0, 0)
    http_receiver.release.set()
    await until(lambda: notifier.status()["receivers"][0]["delivered"] == 15, "the slow receiver to catch up")
    assert [b["module"] for b in http_receiver.bodies("/slow")] == [f"m{i}" for i in range(15)]  # in order


async def test_a_full_queue_drops_its_oldest_notification(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    http_receiver.mode = "hang"
    settings = Settings(retry=RetryPolicy(attempts=1, queue_size=3), tick_seconds=None, drain_seconds=0.5)
    notifier = notifiers([make_alert("ops", webhook(http_receiver))], settings=settings)
    notifier.on_event(event(module="m0"))
    await until(lambda: len(http_receiver.requests) == 1, "the first request")
    for i in range(1, 6):
        notifier.on_event(event(module=f"m{i}"))
    status = notifier.status()["receivers"][0]
    assert (status["queued"], status["dropped"]) == (3, 2)
    dropped = [d for d in notifier.status()["deliveries"] if d["outcome"] == "dropped"]
    assert [d["module"] for d in dropped] == ["m1", "m2"]
    http_receiver.mode = "ok"
    http_receiver.release.set()
    await until(lambda: notifier.status()["receivers"][0]["delivered"] == 4, "the rest")
    assert [b["module"] for b in http_receiver.bodies()] == ["m0", "m3", "m4", "m5"]


async def test_a_missing_environment_variable_is_reported_and_nothing_is_sent(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    alerts = [make_alert("ops", webhook(http_receiver)), make_alert("chat", {"slack": {"urlEnv": "SLACK_URL"}})]
    notifier = notifiers(alerts, env={"SLACK_URL": "not a url"})
    notifier.on_event(event())
    ops, chat = notifier.status()["receivers"]
    assert ops["state"] == chat["state"] == "Misconfigured"
    assert "HOOK_SECRET (spec.webhook.secretEnv) is not set" in ops["lastError"]
    assert "SLACK_URL does not hold an http(s) URL" in chat["lastError"]
    assert ops["failed"] == 1 and chat["failed"] == 1
    assert sorted(notifier.status()["failing"]) == ["chat", "ops"]
    assert await notifier.drain(1.0)
    assert http_receiver.requests == []


async def test_alerts_filter_by_type_severity_and_module(
    http_receiver: HttpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    alerts = [
        make_alert("all", webhook(http_receiver, "/all")),
        make_alert("errors", webhook(http_receiver, "/errors"), severity="error"),
        make_alert("greeter", webhook(http_receiver, "/greeter"), modules=["greeter"], eventTypes=["rollout.*"]),
    ]
    notifier = notifiers(alerts)
    notifier.on_event(event("Promoted", module="greeter"))
    notifier.on_event(event("RolledBack", module="calc", message="calc: back to 1.0.0"))
    notifier.on_event(Event(NOW, "MissingBinary", "x@1.0.0: no binary", None, None, True))
    await until(lambda: len(http_receiver.requests) == 6, "six deliveries")
    assert await notifier.drain(1.0)
    assert http_receiver.types("/all") == ["rollout.promoted", "rollout.rolledBack", "source.stalled"]
    assert http_receiver.types("/errors") == ["rollout.rolledBack", "source.stalled"]
    assert http_receiver.types("/greeter") == ["rollout.promoted"]
    assert len(http_receiver.requests) == 6


async def test_every_outcome_goes_to_the_audit_log(
    http_receiver: HttpReceiver, store: StateStore, notifiers: Callable[..., Notifier]
) -> None:
    http_receiver.mode = "reject"
    notifier = notifiers([make_alert("ops", webhook(http_receiver))], audit=store.append_audit)
    notifier.on_event(event())
    await until(lambda: notifier.status()["receivers"][0]["failed"] == 1, "the rejected delivery")
    http_receiver.mode = "ok"
    notifier.on_event(event(module="calc"))
    await until(lambda: notifier.status()["receivers"][0]["delivered"] == 1, "the delivery")
    assert await notifier.drain(2.0)
    lines = [e for e in store.audit_log(subject="ops") if e.actor == "notifier"]
    assert [e.action for e in lines] == ["notify.failed", "notify.delivered"]
    assert lines[0].detail["type"] == "rollout.promoted" and "HTTP 401" in lines[0].detail["error"]
    assert lines[1].detail["module"] == "calc"
    assert json.dumps(notifier.status())  # status is plain JSON


async def test_an_audit_log_that_fails_does_not_stop_deliveries(
    http_receiver: HttpReceiver, store: StateStore, notifiers: Callable[..., Notifier]
) -> None:
    store.close()  # every audit write now fails
    notifier = notifiers([make_alert("ops", webhook(http_receiver))], audit=store.append_audit)
    notifier.on_event(event())
    notifier.on_event(event(module="calc"))
    await until(lambda: notifier.status()["receivers"][0]["delivered"] == 2, "both deliveries")
    assert await notifier.drain(2.0)


async def test_stop_lets_queued_notifications_go_out(http_receiver: HttpReceiver) -> None:
    notifier = Notifier([make_alert("ops", webhook(http_receiver))], env={"HOOK_SECRET": SECRET},
                        settings=Settings(retry=FAST, tick_seconds=None, drain_seconds=5))  # fmt: skip
    for i in range(5):
        notifier.on_event(event(module=f"m{i}"))  # queued before the notifier runs
    notifier.start()
    await notifier.stop()
    assert len(http_receiver.requests) == 5
    await notifier.stop()  # twice is fine
