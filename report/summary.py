"""The plain-text summary `depthcard audit` prints: headline numbers with their meaning.

Labels, units, meanings and number formats come from `report.metrics`, as on the card.
"""

from __future__ import annotations

from pathlib import Path

from depthcard.report.metrics import METRICS, layer_stability, metric_rows
from depthcard.report.removal import layer_choice, removal_paragraph
from depthcard.schemas.report import AuditReport


def _headline_rows(report: AuditReport) -> list[str]:
    """One line per metric the audit's kind measures ("—" when it was not), fragility too."""
    width = max(len(m.label) for m in METRICS)
    return [
        f"{row.label:<{width}} {row.number:>10}  {row.unit}{row.beside}: {row.meaning}"
        for row in metric_rows(report, source=None, unmeasured=True)
    ]


def summary_table(report: AuditReport, out: Path, *, plots: bool = True) -> str:
    """A fixed-width table of the headline, the verdict and where the files are.

    `plots` says whether plots/ was written (not under `--no-plots`).
    """
    h = report.headline
    child = report.models.child
    width = max(len(m.label) for m in METRICS)
    stable = layer_stability(report)
    lines = [
        f"depthcard audit — {child.repo_id or child.path}",
        f"kind: {report.kind}   layers: 0..{len(report.layers) - 1}   selected layer l* = "
        f"{h.layer} ({'; '.join(filter(None, (report.selected_layer.rule, stable)))})",
        f"removal cost: {removal_paragraph(report)}",
        *([f"layer choice: {c}"] if (c := layer_choice(report)) else []),
        "",
        f"{'metric':<{width}} {'value':>10}  unit: meaning",
        f"{'-' * width} {'-' * 10}  {'-' * 40}",
        *_headline_rows(report),
        "",
        f"verdict: {report.verdict.text}",
    ]
    lines += [f"not measured: {a.section} ({a.reason})" for a in report.absent]
    lines += [f"warning: {w}" for w in report.warnings]
    seconds = sum(s.seconds for s in report.stages)
    files = "report.json, directions.safetensors, card.md" + (", plots/" if plots else "")
    stages = ", ".join(f"{s.name} {s.seconds:.1f}" for s in report.stages)
    lines += [
        "",
        f"wrote {out}/ ({files}) in {seconds:.1f} s",
        f"seconds per stage: {stages}",
    ]
    return "\n".join(lines)
