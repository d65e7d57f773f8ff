"""The control plane as a principal of its own: whom it may sign API commits for, with which roles.

Where it sits: between the API's write endpoints (reconciler.api.deployments, .interfaces) and
reconciler.gitsource.gitwrite. Before the control plane commits for a caller, `acting_for()` checks against
the trust root what the Git source will check after the push (reconciler.gitsource.verify
`on_behalf`): that the control plane's signing key is held by a principal with `actsFor`, and
that the caller (the API token's subject) is a principal of the trust root. The commit then counts
for the caller's roles within `actsFor`. A write that would not verify is refused (409) before
anything is committed, so an API write never stalls the fleet. `trust_line()` is the entry to add
to the trust file, which `hotswap up` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.gitsource.errors import GitSourceError
from reconciler.gitsource.trust import Principal, RolePolicy, TrustRoot

__all__ = ["CONTROL_PLANE_NAME", "DEFAULT_ACTS_FOR", "Acting", "ActingError", "acting_for", "trust_line"]

CONTROL_PLANE_NAME = "hotswap-control-plane"
DEFAULT_ACTS_FOR = ("admin", "developer", "operator")


class ActingError(GitSourceError):
    """The control plane may not sign this commit for this caller; the message says what to change."""


@dataclass(frozen=True)
class Acting:
    """The control plane's principal, the caller's, and the roles a commit for the caller counts for."""

    control_plane: Principal
    caller: Principal
    roles: frozenset[str]


def trust_line(public_key: str, name: str = CONTROL_PLANE_NAME, acts_for: tuple[str, ...] = DEFAULT_ACTS_FOR) -> str:
    """The trust file entry (under `principals:`) that makes the control plane's commits verify."""
    return f'  - {{name: {name}, actsFor: [{", ".join(acts_for)}], keys: ["{public_key.strip()}"]}}'


def control_plane_principal(trust: TrustRoot, public_key: str) -> Principal:
    """The principal holding the control plane's signing key, which must have `actsFor`."""
    holder = trust.holder_of(public_key)
    where = trust.source or "the trust file"
    if holder is None:
        raise ActingError(
            f"the control plane's commit-signing key is not in {where}, so its commits would not verify; "
            f"add this line under principals (and restart): {trust_line(public_key).strip()}"
        )
    if not holder.is_control_plane:
        raise ActingError(
            f"{holder.name} holds the control plane's commit-signing key in {where} but lists no actsFor; "
            f"give it `actsFor: [{', '.join(DEFAULT_ACTS_FOR)}]` instead of roles"
        )
    return holder


def acting_for(trust: TrustRoot, public_key: str, subject: str) -> Acting:
    """What a commit the control plane signs for the API caller `subject` counts for."""
    control_plane = control_plane_principal(trust, public_key)
    caller = trust.principal(subject)
    if caller is None or caller.is_control_plane:
        raise ActingError(
            f"the token's subject {subject!r} is not a principal of {trust.source or 'the trust file'}: a write "
            "through the API counts for the principal the token names (hotswap token --subject NAME)"
        )
    return Acting(control_plane, caller, caller.roles & control_plane.acts_for)


def may(acting: Acting, allowed: frozenset[str], what: str) -> None:
    """`ActingError` unless the roles a commit for the caller counts for include one of `allowed`."""
    if acting.roles & allowed:
        return
    raise ActingError(
        f"{acting.caller.name} ({RolePolicy.spell(acting.caller.roles)}) may not {what} through the control plane "
        f"(it acts for {RolePolicy.spell(acting.control_plane.acts_for)}; {what} needs one of "
        f"{RolePolicy.spell(allowed)})"
    )
