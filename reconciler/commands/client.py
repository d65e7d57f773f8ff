"""What the client verbs (`status`, `diff`, `token`-using scripts) share: where the control plane is
and how to call it. `--control` or HOTSWAP_CONTROL (next to a `hotswap up`, the URL it wrote to
.hotswap/control.url; else http://127.0.0.1:8080) and HOTSWAP_TOKEN (or, next to a `hotswap up`,
the admin token it wrote to .hotswap/admin.token).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError

DEFAULT_CONTROL = "http://127.0.0.1:8080"


class ClientError(ReconcilerError):
    pass


def local_data_dir() -> Path:
    return Path(os.environ.get("HOTSWAP_DATA_DIR") or ".hotswap")


def default_control() -> str:
    """HOTSWAP_CONTROL, else the control plane of a `hotswap up` running here (it writes its URL to
    <data-dir>/control.url and removes it when it stops), else http://127.0.0.1:8080."""
    given = os.environ.get("HOTSWAP_CONTROL")
    if given:
        return given
    try:
        return (local_data_dir() / "control.url").read_text().strip() or DEFAULT_CONTROL
    except OSError:
        return DEFAULT_CONTROL


def add_control_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control",
        default=default_control(),
        help=f"control plane URL (HOTSWAP_CONTROL, else that of a `hotswap up` here, else {DEFAULT_CONTROL})",
    )


def local_admin_token() -> str | None:
    """The token `hotswap up` left in <data-dir>/admin.token (HOTSWAP_DATA_DIR, default .hotswap), if any."""
    path = local_data_dir() / "admin.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def get_json(control: str, path: str, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(control.rstrip("/") + path, headers={"Accept": "application/json"})
    token = os.environ.get("HOTSWAP_TOKEN") or local_admin_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        raise ClientError(f"{control}{path}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(f"cannot reach the control plane at {control} ({reason}); is `hotswap up` running?") from None
