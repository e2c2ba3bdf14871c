"""Write an audit's report folder atomically: all of it, validated, or nothing.

Layout (docs/design.md, Where results live): report.json, directions.safetensors, card.md, plots/,
and samples.jsonl (every judged answer behind the ablation curve) when the audit judged any.
Everything is written into a hidden sibling folder first and renamed into place at the end,
so an interrupted or failed write never leaves a half-written report behind.

`--out` given as a symlink to a folder is written through: the report lands in the link's
resolved target and the link itself stays. A dangling symlink (or a loop) is refused by the
preflight, before any work, since there is no folder to write into.

`--overwrite` replaces only a report folder: one that holds nothing but the files a report
writes (and `withheld.json` of a public copy). A folder with anything else in it, and the
current folder or one that holds it, are refused by the preflight, and nothing is touched.

Replacing an existing report renames it to the hidden sibling `.NAME.old`, renames the new
folder to `NAME`, then removes `.NAME.old`. A process killed between the two renames leaves
only `.NAME.old`; the next preflight (every write runs one) renames it back to `NAME` with a
warning, and removes a stale `.NAME.old` when `NAME` exists.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from depthcard.analysis.judges import samples_sha256, samples_text
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import AuditReport
from depthcard.schemas.sections import JudgedAnswer

SAMPLES_FILE = "samples.jsonl"
# What a report folder holds (with `withheld.json`, its public copy): all `--overwrite`
# ever replaces, so a folder holding anything else is never wiped.
REPORT_PATHS = re.compile(
    r"report\.json|directions\.safetensors|card\.md|samples\.jsonl|withheld\.json|plots/[^/]+\.png"
)

log = logging.getLogger(__name__)


class OutputError(UserError):
    """The output folder cannot be used."""


def preflight(out: Path, overwrite: bool) -> None:
    """Fail before any work when `out` cannot be written or would clobber a report.

    Also recovers a replacement that was killed half-way (see the module docstring).
    """
    target = _target(out)
    here = Path.cwd().resolve()
    if target.resolve() == here or target.resolve() in here.parents:
        raise OutputError(
            f"--out {out}: is the current folder or holds it, which a report never replaces; "
            "name a folder for the report (e.g. --out report)"
        )
    _recover_old(target)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"--out {out}: folder is not empty (pass --overwrite to replace it)")
        foreign = _not_report_files(target)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if foreign[1:] else ""
            raise OutputError(
                f"--out {out}: holds {foreign[0]}{more}, which no report holds; --overwrite "
                "replaces only a report folder, so move it or name another folder"
            )
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{target.name}.probe.", dir=parent)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot write to {parent} ({exc.strerror})") from exc
    os.rmdir(probe)


def _not_report_files(folder: Path) -> list[str]:
    """Paths inside `folder` that no report folder (or its public copy) holds, sorted."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if not (p.is_dir() and not p.is_symlink())
        and not REPORT_PATHS.fullmatch(p.relative_to(folder).as_posix())
    )


def _target(out: Path) -> Path:
    """The folder a write really replaces: a symlink's resolved target, else `out` made
    absolute (so `.` and `..` have a name and a parent like any folder)."""
    if not out.is_symlink():
        return Path(os.path.abspath(out))
    if not out.exists():  # dangling, or a loop
        raise OutputError(f"--out {out}: is a symlink to {os.readlink(out)}, which does not exist")
    return out.resolve()


def _recover_old(target: Path) -> None:
    """Put back the report a killed swap left as `.NAME.old`, or drop it when stale."""
    old = target.with_name(f".{target.name}.old")
    if not old.exists() and not old.is_symlink():
        return
    if not target.exists() and not target.is_symlink():
        log.warning("restoring %s from %s, left by an interrupted write", target, old)
        try:
            old.rename(target)
        except OSError as exc:
            raise OutputError(f"--out {target}: cannot restore {old} ({exc.strerror})") from exc
    else:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def serialize_report(report: AuditReport) -> str:
    """The report as JSON text, validated by parsing it back before it is written."""
    text = report.model_dump_json(indent=2)
    AuditReport.model_validate_json(text)
    return text + "\n"


def write_report_folder(
    out: Path,
    report: AuditReport,
    tensors: dict[str, torch.Tensor],
    card_text: str,
    *,
    overwrite: bool = False,
    plots: bool = True,
    samples: list[JudgedAnswer] | None = None,
) -> Path:
    """Write the folder; returns `out`. Raises OutputError, leaving any old `out` as it was.

    `samples` (the audit's judged answers) become samples.jsonl; their digest must be the one
    report.json records, so a reader can trust that the file is what the curve was built on.
    """
    preflight(out, overwrite)
    text = serialize_report(report)
    recorded = report.ablation.samples_sha256 if report.ablation else None
    if samples and recorded is not None and samples_sha256(samples) != recorded:
        raise ValueError("samples do not match the samples_sha256 recorded in the report")
    target = _target(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / "report.json").write_text(text, encoding="utf-8")
        save_file(
            {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()},
            str(tmp / "directions.safetensors"),
            metadata={"audit_key": report.audit_key, "schema_version": report.schema_version},
        )
        (tmp / "card.md").write_text(card_text, encoding="utf-8")
        if samples:
            (tmp / SAMPLES_FILE).write_text(samples_text(samples), encoding="utf-8")
        if plots:
            from depthcard.report.plots import write_plots

            write_plots(report, tmp / "plots")
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    _remove(old)
    out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        old.rename(out)
        raise
    _remove(old)
