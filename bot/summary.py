"""The plain-text summary `depthcard audit` prints: headline numbers with their meaning."""

from __future__ import annotations

from pathlib import Path

from schemas.report import AuditReport

MEANINGS = {
    "rho_eps_aligned": "share of the residual width the alignment shift fills (template fixed)",
    "rho_eps_naive": "the same, uncontrolled: template and alignment mixed",
    "rho_eps_contrast": "share of the width the child's harmful-vs-harmless contrast occupies",
    "refusal_direction_recovery": "|cos| between the top DiD direction and the refusal direction",
    "safety_specificity": "rank on harmless / rank on harmful (≈1 or more: not safety-specific)",
}


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(report: AuditReport, out: Path) -> str:
    """A fixed-width table of the headline, the verdict and where the files are."""
    h = report.headline
    child = report.models.child
    lines = [
        f"depthcard audit — {child.repo_id or child.path}",
        f"kind: {report.kind}   layers: 0..{len(report.layers) - 1}   selected layer l* = "
        f"{h.layer} ({report.selected_layer.rule})",
        "",
        f"{'metric':<28} {'value':>10}  meaning",
        f"{'-' * 28} {'-' * 10}  {'-' * 40}",
    ]
    rank = f" (rank {h.rank_aligned})" if h.rank_aligned is not None else ""
    for key, meaning in MEANINGS.items():
        value = getattr(h, key)
        if value is None and key in ("rho_eps_contrast", "rho_eps_aligned", "rho_eps_naive"):
            continue
        label = key.replace("_eps", f"_{h.eps:g}")
        suffix = rank if key == "rho_eps_aligned" else ""
        lines.append(f"{label:<28} {_fmt(value):>10}  {meaning}{suffix}")
    lines += ["", f"verdict: {report.verdict.text}"]
    lines += [f"warning: {w}" for w in report.warnings]
    seconds = sum(s.seconds for s in report.stages)
    lines += [
        "",
        f"wrote {out}/ (report.json, directions.safetensors, card.md, plots/) in {seconds:.1f} s",
    ]
    return "\n".join(lines)
