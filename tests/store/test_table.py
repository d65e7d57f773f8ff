"""`Table.of` (reconciler.store.database): a table whose columns are a record's fields by name. A
column the record does not take, or a conversion for a column the table does not have, fails when
the table is declared (at import), not on the first read."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from reconciler.store.database import Table


@dataclass(frozen=True)
class Pair:
    name: str
    count: int
    tags: tuple[str, ...] = ()


def test_a_row_becomes_the_record_by_column_name_through_each_conversion() -> None:
    table = Table.of(
        "pairs", Pair, "label, count, tags", renamed={"label": "name"}, tags=lambda t: tuple(json.loads(t))
    )

    assert table.decode(("a", 3, '["x","y"]')) == Pair("a", 3, ("x", "y"))
    assert (table.columns, table.key) == ("label, count, tags", "id")


def test_a_column_the_record_does_not_take_fails_at_declaration() -> None:
    with pytest.raises(TypeError, match=r"table pairs: Pair has no field \['label'\]"):
        Table.of("pairs", Pair, "label, count")


def test_a_conversion_for_a_column_the_table_lacks_fails_at_declaration() -> None:
    with pytest.raises(TypeError, match=r"table pairs: no column \['tags'\] to convert"):
        Table.of("pairs", Pair, "name, count", tags=tuple)
