"""The report folder's edge cases: `--out` as a symlink, and a swap killed half-way."""

import logging
from pathlib import Path

import pytest
import torch

from depthcard.report.report_folder import OutputError, preflight, write_report_folder
from tests.report_factory import make_report


@pytest.fixture(scope="module")
def report():
    return make_report()


def write(out, report, **kwargs):
    tensors = {"direction": torch.ones(4)}
    return write_report_folder(out, report, tensors, "card\n", plots=False, **kwargs)


def test_a_symlinked_out_is_written_through_and_the_link_stays(tmp_path, report):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    write(link, report)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert (real / "report.json").is_file()
    write(link, report, overwrite=True)  # the replace path keeps the link too
    assert link.is_symlink() and (real / "report.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_a_dangling_symlink_is_refused_by_the_preflight(tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(OutputError, match="does not exist"):
        preflight(link, overwrite=True)
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_a_swap_killed_between_the_renames_is_restored(tmp_path, report, caplog):
    out = tmp_path / "out"
    write(out, report)
    old = tmp_path / ".out.old"
    out.rename(old)  # the state SIGKILL leaves after `out.rename(old)`
    with caplog.at_level(logging.WARNING), pytest.raises(OutputError, match="not empty"):
        preflight(out, overwrite=False)
    assert (out / "report.json").is_file() and not old.exists()
    assert "restoring" in caplog.text


def test_the_next_write_restores_then_replaces(tmp_path, report):
    out = tmp_path / "out"
    write(out, report)
    (tmp_path / "out").rename(tmp_path / ".out.old")
    write(out, report, overwrite=True)
    assert (out / "report.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_stale_old_folder_is_removed_when_the_report_exists(tmp_path, report):
    out = tmp_path / "out"
    write(out, report)
    stale = tmp_path / ".out.old"
    stale.mkdir()
    (stale / "report.json").write_text("{}")
    preflight(out, overwrite=True)
    assert not stale.exists() and (out / "report.json").is_file()


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("out", [".", "..", "./"])
def test_the_current_folder_is_never_replaced(tmp_path, report, monkeypatch, out):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    before = _files(tmp_path)
    with pytest.raises(OutputError, match="the current folder"):
        write(Path(out), report, overwrite=True)
    assert _files(tmp_path) == before and Path.cwd() == work


def test_overwrite_replaces_only_a_report_folder(tmp_path, report):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "thesis.tex").write_text("two years of work")
    before = _files(tmp_path)
    with pytest.raises(OutputError, match="thesis.tex, which no report holds"):
        preflight(out, overwrite=True)
    assert _files(tmp_path) == before
    (out / "thesis.tex").unlink()
    write(out, report, overwrite=True)  # a report folder (even a broken one) is replaced
    assert (out / "report.json").read_text() != "{}"
