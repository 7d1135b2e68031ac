"""The one atomic writer: whole files or none, no overwrite without asking, no stale
temporaries, symbolic links followed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from fusioncodec.cli import cli
from fusioncodec.files import atomic_file, sweep_temporaries, write_atomic


def test_publishing_without_replace_never_overwrites_a_file_made_meanwhile(tmp_path: Path):
    target = tmp_path / "race.fcb"
    with pytest.raises(FileExistsError), atomic_file(target, replace=False) as tmp:
        tmp.write_bytes(b"mine")
        target.write_bytes(b"theirs")  # another process published first
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.fcb"]
    write_atomic(tmp_path / "new.fcb", b"new", replace=False)
    assert (tmp_path / "new.fcb").read_bytes() == b"new"


def test_publishing_falls_back_to_an_exclusive_create_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*_args: object) -> None:
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    write_atomic(tmp_path / "a", b"one", replace=False)
    with pytest.raises(FileExistsError):
        write_atomic(tmp_path / "a", b"two", replace=False)
    assert (tmp_path / "a").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "out.fcb"
    code = (
        "import os, signal, sys\n"
        "from fusioncodec.files import atomic_file\n"
        "with atomic_file(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    assert killed.returncode == -9
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not target.exists()
    alive = tmp_path / f".out.fcb.{os.getpid()}-abc.tmp"  # a writer still at work
    alive.write_bytes(b"busy")
    other = tmp_path / ".other.fcb.1-abc.tmp"  # another file's: not this write's business
    other.write_bytes(b"")
    write_atomic(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.fcb", alive.name, other.name]
    )
    assert sweep_temporaries(target) == []


def test_a_symbolic_link_is_followed_not_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real.fcb"
    real.write_bytes(b"old")
    link = tmp_path / "link.fcb"
    link.symlink_to(real)
    write_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_fcodec_refuses_an_output_created_while_it_worked(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands writing one name: the second to publish fails, nothing is clobbered."""
    import fusioncodec.file_jobs as jobs

    source = tmp_path / "a.fcb"
    runner = CliRunner()
    png = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (64, 48), (90, 120, 30)).save(png)
    env = {"FUSIONCODEC_WEIGHTS": str(tiny_weights)}
    assert runner.invoke(cli, ["encode", str(png), "-o", str(source)], env=env).exit_code == 0
    target = tmp_path / "race.fcb"
    checked = jobs.check_writable

    def check_then_lose_the_race(job: jobs.Job, force: bool, files: jobs.Files) -> None:
        checked(job, force, files)
        target.write_bytes(b"the other command's file")

    monkeypatch.setattr(jobs, "check_writable", check_then_lose_the_race)
    result = runner.invoke(cli, ["strip", str(source), "-o", str(target)], env=env)
    assert_one_line_error(result, "race.fcb: already exists", "--force")
    assert target.read_bytes() == b"the other command's file"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
