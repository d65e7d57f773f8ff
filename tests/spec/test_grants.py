"""Filesystem grants refused at validate time: `host` absolute, normalised, never `/` nor a system
directory (issue 16, item 2). Whether a node serves a grant is its operator's `--allow-dir`, checked
by the node at load; validate checks what it can know without the node."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotswap.cli import main
from reconciler.spec.loader import load_fleet
from reconciler.spec.models import Capabilities
from tests.spec.fleets import MODULE, write_fleet

FIELD = "spec.capabilities.filesystem[1].host"


def with_grant(host: str) -> str:
    """The module with a harmless grant first and `host` second (line 12 of the file)."""
    return (
        MODULE
        + "  capabilities:\n"
        + "    filesystem:\n"
        + "      - {host: /srv/hotswap/adder, guest: /data}\n"
        + f"      - {{host: '{host}', guest: /more, mode: rw}}\n"
    )


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("/", "the host's root directory is never granted"),
        ("srv/hotswap", "'srv/hotswap' is not an absolute path"),
        ("/srv/hotswap/../../etc", "'/srv/hotswap/../../etc' has a '..' component"),
        ("/srv/./hotswap", "'/srv/./hotswap' is not normalised; write '/srv/hotswap'"),
        ("/srv//hotswap", "'/srv//hotswap' is not normalised; write '/srv/hotswap'"),
        ("/srv/hotswap/", "'/srv/hotswap/' is not normalised; write '/srv/hotswap'"),
        ("//srv", "'//srv' is not normalised; write '/srv'"),
        ("/etc", "'/etc' is /etc, which is never granted"),
        ("/etc/ssl/private", "'/etc/ssl/private' is under /etc, which is never granted"),
        ("/root/.ssh", "'/root/.ssh' is under /root, which is never granted"),
        ("/proc/self", "'/proc/self' is under /proc, which is never granted"),
        ("/sys", "'/sys' is /sys, which is never granted"),
        ("/dev/shm", "'/dev/shm' is under /dev, which is never granted"),
        ("/boot", "'/boot' is /boot, which is never granted"),
        ("/run/docker.sock", "'/run/docker.sock' is under /run, which is never granted"),
        ("/usr", "'/usr' is a top-level system directory; grant a folder below it, such as /usr/hotswap/NAME"),
        ("/var", "'/var' is a top-level system directory"),
        ("/home", "'/home' is a top-level system directory"),
    ],
)
def test_a_grant_validate_can_judge_is_refused_at_its_file_line_and_field(tmp_path: Path, host: str, why: str) -> None:
    result = load_fleet(write_fleet(tmp_path, {"modules/adder.yaml": with_grant(host)}))
    assert not result.ok
    found = [str(p) for p in result.problems]
    assert len(found) == 1 and found[0].startswith(f"modules/adder.yaml:12: {FIELD}: {why}"), found


@pytest.mark.parametrize("host", ["/srv/hotswap/adder", "/var/lib/hotswap/adder", "/tmp/hotswap", "/data/adder"])
def test_a_folder_below_a_top_level_directory_is_accepted(tmp_path: Path, host: str) -> None:
    result = load_fleet(write_fleet(tmp_path, {"modules/adder.yaml": with_grant(host)}))
    assert result.ok, result.problems
    assert result.fleet is not None
    grants = result.fleet.modules["adder"].spec.capabilities.filesystem
    assert [(g.host, g.mode) for g in grants] == [("/srv/hotswap/adder", "ro"), (host, "rw")]


def test_validate_prints_the_refused_grant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_fleet(tmp_path / "fleet", {"modules/adder.yaml": with_grant("/")})
    assert main(["validate", str(root)]) == 1
    assert capsys.readouterr().out.strip() == (
        f"{root}/modules/adder.yaml:12: {FIELD}: "
        "the host's root directory is never granted; grant a folder such as /srv/hotswap/NAME"
    )


def test_tables_and_records_stored_earlier_are_read_back_as_they_are() -> None:
    """Only fleet input is judged: a grant the control plane published before this rule existed
    still reads back (the node refuses it at load), so a restart is never stopped by it."""
    caps = Capabilities.model_validate({"filesystem": [{"host": "/", "guest": "/data", "mode": "rw"}]})
    assert caps.filesystem[0].host == "/"
