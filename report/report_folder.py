"""Write an audit's report folder atomically: all of it, validated, or nothing.

Layout (docs/design.md, Where results live): report.json, directions.safetensors, card.md, plots/.
Everything is written into a hidden sibling folder first and renamed into place at the end,
so an interrupted or failed write never leaves a half-written report behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from depthcard.schemas.errors import UserError
from depthcard.schemas.report import AuditReport


class OutputError(UserError):
    """The output folder cannot be used."""


def preflight(out: Path, overwrite: bool) -> None:
    """Fail before any work when `out` cannot be written or would clobber a report."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"--out {out}: folder is not empty (pass --overwrite to replace it)")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe.", dir=parent)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot write to {parent} ({exc.strerror})") from exc
    os.rmdir(probe)


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
) -> Path:
    """Write the folder; returns `out`. Raises OutputError, leaving any old `out` as it was."""
    preflight(out, overwrite)
    text = serialize_report(report)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "report.json").write_text(text, encoding="utf-8")
        save_file(
            {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()},
            str(tmp / "directions.safetensors"),
            metadata={"audit_key": report.audit_key, "schema_version": report.schema_version},
        )
        (tmp / "card.md").write_text(card_text, encoding="utf-8")
        if plots:
            from depthcard.report.plots import write_plots

            write_plots(report, tmp / "plots")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
