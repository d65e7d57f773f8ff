"""The checkout that reads only what changed (reconciler.gitsource.checkout) gives what a full export
and `load_fleet` give: the same fleet, the same problems with file and line, the same refusals.

Random sequences of commits (hypothesis) add, change, rename and delete modules, break files and fix
them, change a module's binary, add symlinks (inside and outside the root), turn a folder into a file,
and go back to an earlier commit; after each, the incremental load is compared with a full one made
with cold loader caches. Real git repositories, unsigned commits (signatures are not read here).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.gitsource.checkout import Checkout
from reconciler.gitsource.errors import ExportError, TooLargeError
from reconciler.gitsource.gitrepo import GitRepo
from reconciler.spec import documents, loader, sources
from reconciler.spec.limits import InputLimits
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Repo, Workspace, fleet_yaml, module_yaml

LIMITS = InputLimits(yaml_bytes=4096)
WAT = '(module (memory 1) (func (export "run") (result i32) (i32.const {n})))\n'
BAD_WAT = '(module (func (export "run") (result i32) (i32.const\n'


def wat_module(name: str, version: str) -> str:
    return (
        "apiVersion: hotswap.dev/v1\nkind: Module\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  version: {version}\n  source: {{path: ../wasm/{name}.wat}}\n  healthCheck: {{function: run}}\n"
    )


Outcome = tuple[str, object, tuple[str, ...]]


def full(repo: GitRepo, sha: str, work: Path) -> Outcome:
    documents.FILE_CACHE.clear()
    sources.BINARY_CACHE.clear()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = Path(tmp) / "fleet"
        try:
            repo.export(sha, "fleet", root, LIMITS)
        except ExportError as exc:
            return (type(exc).__name__, None, tuple(sorted(f"{p.path}: {p.field}" for p in exc.problems)))
        result = loader.load_fleet(root, LIMITS)
    return ("loaded", result.fleet, tuple(str(p) for p in result.problems))


def incremental(checkout: Checkout, sha: str) -> Outcome:
    try:
        result = checkout.load(sha)
    except ExportError as exc:
        return (type(exc).__name__, None, tuple(sorted(f"{p.path}: {p.field}" for p in exc.problems)))
    return ("loaded", result.fleet, tuple(str(p) for p in result.problems))


def apply(repo: Repo, op: str, k: int, n: int) -> None:
    """One change to the working tree; `k` picks a module, `n` makes versions and contents new."""
    name = f"m{k}"
    fleet = repo.path / "fleet"
    existing = sorted(p.relative_to(repo.path).as_posix() for p in (fleet / "modules").glob("*.yaml"))
    if op == "add" or op == "change":
        repo.write(f"fleet/modules/{name}.yaml", module_yaml(name, f"1.{n}.0"))
    elif op == "delete" and existing:
        (repo.path / existing[k % len(existing)]).unlink()
    elif op == "rename" and existing:  # the same blob under another path
        source = repo.path / existing[k % len(existing)]
        source.rename(fleet / "modules" / f"renamed-{n}.yaml")
    elif op == "break-yaml":
        repo.write(f"fleet/modules/{name}.yaml", f"kind: Module\nmetadata: {{name: {name}}}\nspec: [\n")
    elif op == "break-field":
        repo.write(f"fleet/modules/{name}.yaml", module_yaml(name, "1.0.0") + "  colour: blue\n")
    elif op == "duplicate":
        if (fleet / "other").is_file():  # after folder-to-file: a folder again
            (fleet / "other").unlink()
        repo.write(f"fleet/other/dup-{k}.yaml", module_yaml("m0", "9.9.9"))
    elif op == "crlf":
        repo.write(f"fleet/modules/{name}.yaml", module_yaml(name, f"2.{n}.0").replace("\n", "\r\n"))
    elif op == "too-large":
        repo.write(f"fleet/modules/{name}.yaml", "# padding\n" * 500)
    elif op == "binary":
        repo.write(f"fleet/modules/w{k}.yaml", wat_module(f"w{k}", f"1.{n}.0"))
        repo.write(f"fleet/wasm/w{k}.wat", WAT.format(n=n))
    elif op == "break-binary":
        repo.write(f"fleet/wasm/w{k}.wat", BAD_WAT)
    elif op == "symlink-in":
        link = fleet / "links" / f"alias-{k}.yaml"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to("../modules/m0.yaml")
    elif op == "symlink-out":
        link = fleet / "links" / "escape"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to("../../../../../../../etc")
    elif op == "folder-to-file":  # a folder of the last revision is a file in this one
        other = fleet / "other"
        if other.is_dir():
            for path in other.iterdir():
                path.unlink()
            other.rmdir()
            repo.write("fleet/other", "not a folder any more\n")
        elif other.exists():
            other.unlink()
    elif op == "fix":  # every file valid again, nothing outside the root
        for path in [*(fleet / "modules").glob("*.yaml"), *(fleet / "links").glob("*")]:
            path.unlink()
        for path in (fleet / "wasm").glob("*.wat"):
            path.write_text(WAT.format(n=n))
        repo.write(f"fleet/modules/{name}.yaml", module_yaml(name, f"3.{n}.0"))


OPS = [
    "add",
    "change",
    "delete",
    "rename",
    "break-yaml",
    "break-field",
    "duplicate",
    "crlf",
    "too-large",
    "binary",
    "break-binary",
    "symlink-in",
    "symlink-out",
    "folder-to-file",
    "fix",
    "back",
]
steps = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 3)), min_size=1, max_size=14)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
@example([("duplicate", 0), ("folder-to-file", 0), ("duplicate", 1)])  # a folder, a file, a folder again
def test_incremental_load_equals_a_full_load_after_every_commit(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory(prefix="hotswap-incremental-") as tmp:
        work = Path(tmp)
        repo = Repo(work / "repo")
        repo.write("fleet/fleet.yaml", fleet_yaml())
        repo.write("fleet/modules/m0.yaml", module_yaml("m0", "1.0.0"))
        heads = [repo.commit("first")]
        git = GitRepo(repo.path)
        checkout = Checkout(git, "fleet", work / "checkout", LIMITS)
        assert incremental(checkout, heads[0]) == full(git, heads[0], work)
        for n, (op, k) in enumerate(ops, start=1):
            if op == "back":
                sha = heads[k % len(heads)]
            else:
                apply(repo, op, k, n)
                sha = repo.commit(f"{op} {k}", allow_empty=True)
                heads.append(sha)
            assert incremental(checkout, sha) == full(git, sha, work), (op, k)


def test_one_changed_module_is_the_only_file_read_and_written(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.write("fleet/fleet.yaml", fleet_yaml())
    for k in range(20):
        repo.write(f"fleet/modules/m{k}.yaml", module_yaml(f"m{k}", "1.0.0"))
    first = repo.commit("twenty modules")
    checkout = Checkout(GitRepo(repo.path), "fleet", tmp_path / "checkout", LIMITS)
    assert checkout.load(first).ok and (checkout.loader.parsed, checkout.written) == (21, 21)
    repo.write("fleet/modules/m7.yaml", module_yaml("m7", "1.1.0"))
    second = repo.commit("m7 1.1.0")
    result = checkout.load(second)
    assert result.fleet is not None and result.fleet.modules["m7"].spec.version == "1.1.0"
    assert (checkout.loader.parsed, checkout.written) == (22, 22)


def test_a_broken_commit_names_file_and_line_and_the_fix_reads_one_file(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.write("fleet/fleet.yaml", fleet_yaml())
    repo.write("fleet/modules/a.yaml", module_yaml("a", "1.0.0"))
    checkout = Checkout(GitRepo(repo.path), "fleet", tmp_path / "checkout", LIMITS)
    assert checkout.load(repo.commit("first")).ok
    repo.write("fleet/modules/a.yaml", module_yaml("a", "1.0.0") + "  colour: blue\n")
    broken = checkout.load(repo.commit("broken"))
    assert broken.fleet is None
    assert [str(p) for p in broken.errors] == ["modules/a.yaml:7: spec.colour: unknown field"]
    repo.write("fleet/modules/a.yaml", module_yaml("a", "1.0.1"))
    parsed = checkout.loader.parsed
    assert checkout.load(repo.commit("fixed")).ok and checkout.loader.parsed == parsed + 1


def test_a_file_over_its_cap_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.write("fleet/fleet.yaml", fleet_yaml())
    checkout = Checkout(GitRepo(repo.path), "fleet", tmp_path / "checkout", LIMITS)
    assert checkout.load(repo.commit("first")).ok
    repo.write("fleet/big.yaml", "# padding\n" * 500)
    written = checkout.written
    try:
        checkout.load(repo.commit("big"))
    except TooLargeError as exc:
        assert [f"{p.path}: {p.field}" for p in exc.problems] == ["big.yaml: size"]
    else:
        raise AssertionError("a file over its cap was read")
    assert checkout.written == written and not (checkout.root / "big.yaml").exists()


def test_the_source_parses_one_file_per_commit_and_an_older_fleet_on_request(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    source = source_for(ws, repo.path, standard_trust(keys))
    first = repo.head()
    assert source.sync().last_applied_revision == first
    checkout = source.checkout
    assert checkout is not None
    parsed = checkout.loader.parsed
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    second = repo.commit("greeter 1.1.0")
    assert source.sync().last_applied_revision == second and checkout.loader.parsed == parsed + 1
    older = source.fleet_at(first)  # the checkout goes back, from what it has parsed
    assert older is not None and older.modules["greeter"].spec.version == "1.0.0"
    assert checkout.loader.parsed == parsed + 1
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.2.0"))
    third = repo.commit("greeter 1.2.0")
    assert source.sync().last_applied_revision == third
    latest = source.latest
    assert latest is not None and latest.fleet is not None
    assert latest.fleet.modules["greeter"].spec.version == "1.2.0"
