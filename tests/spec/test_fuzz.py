"""Property tests: whatever YAML a pull request holds, the loader answers with problems, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.spec.loader import load_fleet
from tests.spec.fleets import write_fleet

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["1.0.0", "Canary", "all", "../wasm/adder.wat", "us-east", "sha256:" + "a" * 64]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "kind",
            "apiVersion",
            "metadata",
            "name",
            "spec",
            "version",
            "source",
            "path",
            "limits",
            "memoryMB",
            "placement",
            "replicas",
            "regions",
            "canary",
            "steps",
            "type",
            "rollout",
            "pins",
            "versions",
        ]
    ),
    st.text(min_size=1, max_size=8),
)
trees = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=5), max_leaves=25
)
kinds = st.sampled_from(["Fleet", "Module", "RolloutStrategy", "Interface", "Other", None])


def dump(doc: Any) -> str:
    import io

    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, out)
    return out.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=kinds, spec=trees, name=st.one_of(st.text(max_size=10), st.integers()))
def test_random_documents_give_problems_not_tracebacks(kind: str | None, spec: Any, name: Any) -> None:
    doc: dict[str, Any] = {"metadata": {"name": name}, "spec": spec}
    if kind is not None:
        doc["kind"] = kind
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fleet(Path(tmp), {"extra.yaml": dump(doc)})
        result = load_fleet(root)
        for problem in result.problems:
            assert problem.path and problem.field and problem.message


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab:-{}[]\n #&*!|>'\"%@`,?\t0.")), max_size=120))
def test_random_text_gives_problems_not_tracebacks(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fleet(Path(tmp), {"random.yaml": text})
        result = load_fleet(root)
        assert all(str(p) for p in result.problems)
