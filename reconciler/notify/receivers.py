"""Receivers: send one notification to one place, once. Retries belong to the delivery worker.

Where it sits: `build_receiver` turns an Alert's receiver spec and the control plane's environment
into a `Receiver`; the notifier's delivery worker (`reconciler.notify.delivery`) calls `send` and
retries on `DeliveryError`. Three kinds:

- `WebhookReceiver`: POST the notification's JSON; with a secret, the header
  `X-Hotswap-Signature: sha256=<hex HMAC-SHA256 of the body>` lets the receiver check it came from
  this control plane (`verify_signature` is the receiver's side, for Python receivers and tests).
- `SlackReceiver`: POST `{"text", "blocks"}` to a Slack-compatible incoming webhook.
- `EmailReceiver`: one message over SMTP with STARTTLS (stdlib `smtplib`, in a worker thread so the
  event loop never waits on a mail server); login only after STARTTLS.

HTTP answers: 2xx is delivered; 408, 429 and 5xx are retried; any other 4xx is permanent (a wrong
secret or URL does not fix itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp

from reconciler.notify.errors import DeliveryError, PermanentDeliveryError, ReceiverConfigError
from reconciler.notify.events import Notification
from reconciler.spec.alerts import Alert
from reconciler.spec.alerts import EmailReceiver as EmailSpec

__all__ = [
    "SIGNATURE_HEADER",
    "EmailReceiver",
    "HttpClient",
    "Receiver",
    "SlackReceiver",
    "WebhookReceiver",
    "build_receiver",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Hotswap-Signature"
USER_AGENT: Final = "hotswap-notifier/1"
RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
HTTP_TIMEOUT_SECONDS: Final = 10.0
SMTP_TIMEOUT_SECONDS: Final = 15.0

SEVERITY_EMOJI: Final = {"info": ":information_source:", "warning": ":warning:", "error": ":rotating_light:"}


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for `body`: `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Whether `header` is the signature of `body` under `secret` (constant-time comparison)."""
    return header is not None and hmac.compare_digest(header, sign(body, secret))


def encode(notification: Notification) -> bytes:
    return json.dumps(notification.to_json(), separators=(",", ":"), sort_keys=True).encode()


class Receiver(Protocol):
    """One destination. `target` describes it for status without revealing a secret."""

    @property
    def kind(self) -> str: ...

    @property
    def target(self) -> str: ...

    async def send(self, notification: Notification) -> None:
        """Deliver once; raise `DeliveryError` (retry) or `PermanentDeliveryError` (do not)."""
        ...


class HttpClient:
    """One aiohttp session for every HTTP receiver, opened and closed with the notifier."""

    def __init__(self, timeout: float = HTTP_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"User-Agent": USER_AGENT}
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        """POST `body`; return on 2xx, else raise the matching `DeliveryError`."""
        await self.open()
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                text = (await response.text(errors="replace"))[:200]
                problem = f"HTTP {response.status} from {redact(url)}" + (f": {text}" if text else "")
                if response.status in RETRYABLE_STATUS or response.status >= 500:
                    raise DeliveryError(problem)
                raise PermanentDeliveryError(problem)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"{redact(url)}: {type(exc).__name__}: {exc or 'timed out'}") from exc


def redact(url: str) -> str:
    """A URL fit for status and logs: scheme, host and port only (paths of incoming webhooks are tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class WebhookReceiver:
    kind = "webhook"

    def __init__(self, http: HttpClient, url: str, secret: str | None) -> None:
        self.http = http
        self.url = url
        self.secret = secret

    @property
    def target(self) -> str:
        return self.url.split("?", 1)[0] + (" (signed)" if self.secret else "")

    async def send(self, notification: Notification) -> None:
        body = encode(notification)
        headers = {
            "Content-Type": "application/json",
            "X-Hotswap-Event": notification.type,
            "X-Hotswap-Delivery": notification.id,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        await self.http.post(self.url, body, headers)


def slack_payload(notification: Notification) -> dict[str, Any]:
    emoji = SEVERITY_EMOJI[notification.severity.value]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{notification.subject}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": notification.message}},
    ]
    context = [f"`{notification.reason}`"]
    if notification.revision:
        context.append(f"revision `{notification.revision[:12]}`")
    if notification.deployment:
        context.append(f"deployment `{notification.deployment}`")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    if notification.action:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"To act: `{notification.action}`"}})
    return {"text": f"{notification.subject}: {notification.message}", "blocks": blocks}


class SlackReceiver:
    kind = "slack"

    def __init__(self, http: HttpClient, url: str) -> None:
        self.http = http
        self.url = url

    @property
    def target(self) -> str:
        return redact(self.url)

    async def send(self, notification: Notification) -> None:
        body = json.dumps(slack_payload(notification)).encode()
        await self.http.post(self.url, body, {"Content-Type": "application/json"})


class EmailReceiver:
    kind = "email"

    def __init__(
        self,
        spec: EmailSpec,
        credentials: tuple[str, str] | None,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = SMTP_TIMEOUT_SECONDS,
    ) -> None:
        self.spec = spec
        self.credentials = credentials
        self.tls_context = tls_context
        self.timeout = timeout

    @property
    def target(self) -> str:
        return f"smtp://{self.spec.smtp_host}:{self.spec.smtp_port} to {', '.join(self.spec.to)}"

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = notification.subject
        message["From"] = self.spec.from_
        message["To"] = ", ".join(self.spec.to)
        message["Date"] = formatdate(notification.at, usegmt=True)
        message["Message-ID"] = make_msgid(notification.id, domain=self.spec.from_.rsplit("@", 1)[1])
        message["X-Hotswap-Event"] = notification.type
        message["X-Hotswap-Delivery"] = notification.id
        message.set_content(notification.text() + "\n")
        return message

    async def send(self, notification: Notification) -> None:
        await asyncio.to_thread(self._send, self.message(notification))

    def _send(self, message: EmailMessage) -> None:
        spec = self.spec
        where = f"smtp://{spec.smtp_host}:{spec.smtp_port}"
        try:
            with smtplib.SMTP(spec.smtp_host, spec.smtp_port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if spec.starttls:
                    smtp.starttls(context=self.tls_context or ssl.create_default_context())
                    smtp.ehlo()
                if self.credentials is not None:
                    smtp.login(*self.credentials)
                smtp.send_message(message)
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError, smtplib.SMTPRecipientsRefused) as exc:
            raise PermanentDeliveryError(f"{where}: {type(exc).__name__}: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            said = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            problem = f"{where}: SMTP {exc.smtp_code}: {said}"
            raise (PermanentDeliveryError if exc.smtp_code >= 500 else DeliveryError)(problem) from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(f"{where}: TLS certificate not trusted: {exc.verify_message}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}") from exc


def _env(env: Mapping[str, str], name: str, field: str, alert: str) -> str:
    value = env.get(name)
    if not value:
        raise ReceiverConfigError(f"Alert {alert!r}: environment variable {name} ({field}) is not set")
    return value


def build_receiver(
    alert: Alert, env: Mapping[str, str], http: HttpClient, tls_context: ssl.SSLContext | None = None
) -> Receiver:
    """The alert's receiver with its credentials read from `env`; `ReceiverConfigError` names what is missing."""
    spec, name = alert.spec, alert.metadata.name
    if spec.webhook is not None:
        secret = _env(env, spec.webhook.secret_env, "spec.webhook.secretEnv", name) if spec.webhook.secret_env else None
        return WebhookReceiver(http, spec.webhook.url, secret)
    if spec.slack is not None:
        url = _env(env, spec.slack.url_env, "spec.slack.urlEnv", name)
        if not url.startswith(("https://", "http://")):
            raise ReceiverConfigError(f"Alert {name!r}: {spec.slack.url_env} does not hold an http(s) URL")
        return SlackReceiver(http, url)
    assert spec.email is not None
    credentials = None
    if spec.email.username_env is not None and spec.email.password_env is not None:
        credentials = (
            _env(env, spec.email.username_env, "spec.email.usernameEnv", name),
            _env(env, spec.email.password_env, "spec.email.passwordEnv", name),
        )
    return EmailReceiver(spec.email, credentials, tls_context)
