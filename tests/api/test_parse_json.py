"""parse_json reads what json reads, exactly (an integer past 64 bits stays that integer), and refuses
nesting past MAX_JSON_DEPTH at any depth with a 400 naming where."""

from __future__ import annotations

import math

import pytest

from reconciler.api.base import MAX_JSON_DEPTH, ApiError, parse_json


def test_what_json_took_is_still_taken() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert math.isnan(parse_json(b'{"a": NaN}')["a"])
    assert parse_json(b"[123456789012345678901234567890]") == [123456789012345678901234567890]  # not a float
    assert parse_json('"\\ud800"') == "\ud800"  # a lone surrogate, as json reads it


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 5_000])
def test_nesting_past_the_limit_is_a_400_at_any_depth(depth: int) -> None:
    body = ("[" * depth + "]" * depth).encode()
    if depth <= MAX_JSON_DEPTH:
        assert parse_json(body) is not None
        return
    with pytest.raises(ApiError) as refused:
        parse_json(body, "body")
    assert refused.value.status == 400 and f"nested more than {MAX_JSON_DEPTH} levels" in refused.value.message


def test_nesting_under_objects_counts_too() -> None:
    body = '{"a": ' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(ApiError):
        parse_json(body)


def test_not_json_names_where() -> None:
    with pytest.raises(ApiError) as refused:
        parse_json(b"{not json", "heartbeat")
    assert refused.value.status == 400 and "not valid JSON" in refused.value.message
