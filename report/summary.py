"""The plain-text summary `depthcard audit` prints: headline numbers, then what they mean.

Labels, units, meanings and number formats come from `report.metrics`, as on the card. The
table keeps to three short columns (metric, value, unit) so it fits a 100-column terminal;
each number's companions (intervals, nulls, placebos) and its meaning follow below it, as
paragraphs wrapped at `WIDTH`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from depthcard.report.metrics import MetricRow, layer_stability, metric_rows
from depthcard.report.removal import layer_choice, removal_paragraph
from depthcard.schemas.report import AuditReport

WIDTH = 100  # columns of every line the summary prints
VALUE_WIDTH = 30  # a longer value (an absent reason) is given in the details instead


def wrap(text: str, indent: str = "  ") -> list[str]:
    """`text` as lines of at most WIDTH columns, continuation lines indented (a word longer
    than a line, such as a long path, is kept whole)."""
    return textwrap.wrap(
        text, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    ) or [""]


def _short_unit(row: MetricRow) -> str:
    """The unit cell: the unit up to its own explanation (`0–1: (score − …)` → `0–1`)."""
    return row.unit.split(": ", 1)[0]


def _table(rows: list[MetricRow]) -> list[str]:
    """metric | value | unit, aligned; a value too long for its column reads "see below"."""
    label_w = max([len("metric"), *(len(r.label) for r in rows)])
    cells = [r.number if len(r.number) <= VALUE_WIDTH else "see below" for r in rows]
    value_w = max([len("value"), *(len(c) for c in cells)])
    lines = [f"{'metric':<{label_w}}  {'value':>{value_w}}  unit"]
    lines.append(f"{'-' * label_w}  {'-' * value_w}  {'-' * 4}")
    unit_indent = " " * (label_w + value_w + 4)
    for row, cell in zip(rows, cells, strict=True):
        line = f"{row.label:<{label_w}}  {cell:>{value_w}}  {_short_unit(row)}"
        lines += wrap(line, unit_indent)
    return lines


def details(rows: list[MetricRow]) -> list[str]:
    """One paragraph per metric, unwrapped: label, value with its companions, the unit's own
    explanation where the table cut it short, and what the number means."""
    out = []
    for r in rows:
        unit = f"; {r.unit}" if r.unit != _short_unit(r) else ""
        out.append(f"{r.label}: {r.number}{r.beside}{unit}. {r.meaning}")
    return out


def summary_table(report: AuditReport, out: Path, *, plots: bool = True) -> str:
    """The headline table, what each number means, the verdict and where the files are;
    no line is wider than WIDTH (but for a word that is, such as a long path).

    `plots` says whether plots/ was written (not under `--no-plots`).
    """
    h = report.headline
    child = report.models.child
    stable = layer_stability(report)
    rows = metric_rows(report, source=None, unmeasured=True)
    choice = layer_choice(report)
    lines = [
        *wrap(f"depthcard audit — {child.repo_id or child.path}"),
        *wrap(
            f"kind: {report.kind}   layers: 0..{len(report.layers) - 1}   selected layer l* = "
            f"{h.layer} ({'; '.join(filter(None, (report.selected_layer.rule, stable)))})"
        ),
        "",
        *_table(rows),
        "",
        *wrap(f"verdict: {report.verdict.text}"),
        *wrap(f"removal cost: {removal_paragraph(report)}"),
        *(wrap(f"layer choice: {choice}") if choice else []),
        "",
        "what the numbers mean:",
    ]
    for paragraph in details(rows):
        lines += wrap(paragraph)
    lines += [""] if report.absent or report.warnings else []
    for a in report.absent:
        lines += wrap(f"not measured: {a.section} ({a.reason})")
    for w in report.warnings:
        lines += wrap(f"warning: {w}")
    seconds = sum(s.seconds for s in report.stages)
    files = "report.json, directions.safetensors, card.md" + (", plots/" if plots else "")
    stages = ", ".join(f"{s.name} {s.seconds:.1f}" for s in report.stages)
    lines += [
        "",
        *wrap(f"wrote {out}/ ({files}) in {seconds:.1f} s"),
        *wrap(f"seconds per stage: {stages}"),
    ]
    return "\n".join(lines)
