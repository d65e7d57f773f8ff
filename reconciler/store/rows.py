"""How values go into and come out of the state store's columns, the same for both databases.

Where it sits: every aggregate store (modules, nodes, rollouts, revisions, audit) and the outbox
encode their rows with these. Times are fixed-width UTC text, so text order is time order in SQLite
and PostgreSQL alike; JSON is compact with sorted keys, so equal values are equal text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

_T = TypeVar("_T")


def marks(columns: str | Sequence[str]) -> str:
    """`?, ?, ?`: one placeholder per column of a comma-separated list (or per item)."""
    count = len(columns.split(",")) if isinstance(columns, str) else len(columns)
    return ", ".join("?" * count)


def ts(moment: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order in both databases."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_or_none(moment: datetime | None) -> str | None:
    return ts(moment) if moment is not None else None


def dt(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def dt_or_none(text: str | None) -> datetime | None:
    return dt(text) if text is not None else None


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def required(value: _T | None) -> _T:
    assert value is not None, "a row written in this transaction is missing"
    return value


def content_named(value: Any) -> tuple[str, str]:
    """`value` as JSON (`to_json`) and the SHA-256 of that text (hex): the name of a row stored once for
    every owner of equal content (a node table: reconciler.store.nodes)."""
    text = to_json(value)
    return hashlib.sha256(text.encode()).hexdigest(), text
