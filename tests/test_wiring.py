"""No wiring by assignment in the control plane: nothing in `reconciler/` sets an attribute of an
object other than `self`, but what is listed below with its reason (issue 23).

The same scan as `tests/edge/test_wiring.py` (its `writes`), over `reconciler/`: a dependency goes
in through the constructor; a value that changes at runtime changes through a method of its owner.
"""

from __future__ import annotations

from pathlib import Path

from tests.edge.test_wiring import Allowed, all_writes, allowed

RECONCILER = Path(__file__).resolve().parents[1] / "reconciler"

ALLOWED = (
    Allowed("api/base.py", frozenset({"handler"}), "the `public` decorator marks the handler it returns"),
    Allowed(
        "api/modules.py", frozenset({"response"}), "an aiohttp StreamResponse is configured by attribute, then prepared"
    ),
    Allowed("api/security.py", frozenset({"context"}), "ssl.SSLContext is configured by attribute"),
    Allowed("commands/status.py", frozenset({"yaml"}), "ruamel.yaml is configured by attribute"),
    Allowed("gitsource/gitwrite.py", frozenset({"yaml"}), "ruamel.yaml is configured by attribute"),
    Allowed("spec/limits.py", frozenset({"reader"}), "ruamel.yaml's reader is configured by attribute"),
    Allowed(
        "apply/controller.py",
        frozenset({"self.state", "work"}),
        "the controller's own record of its passes (ControllerState) and a pass's Work, filled step by step",
    ),
    Allowed("gitsource/recovery.py", frozenset({"state"}), "the walk's own state record, local to the function"),
    Allowed("gitsource/source.py", frozenset({"found"}), "a record the function builds and returns"),
    Allowed("planner/placement.py", frozenset({"memo"}), "placement's memo of its last answer, passed in by its owner"),
    Allowed("spec/documents.py", frozenset({"doc"}), "a parsed document's model, set by the step that validates it"),
)


def test_no_attribute_of_another_object_is_assigned_in_the_control_plane() -> None:
    wiring = [f"reconciler/{w.path}:{w.line}: {w.code}" for w in all_writes(RECONCILER) if not allowed(w, ALLOWED)]
    assert wiring == [], "pass it to the constructor, or change it through a method of its owner:\n" + "\n".join(wiring)


def test_every_allowed_write_is_still_there() -> None:
    seen = {(w.path, w.base) for w in all_writes(RECONCILER)}
    stale = [a for a in ALLOWED if not all((a.path, base) in seen for base in a.bases)]
    assert stale == []
