"""The plain-text summary `depthcard audit` prints: headline numbers with their meaning."""

from __future__ import annotations

from pathlib import Path

from depthcard.schemas.report import AuditReport

MEANINGS = {
    "rho_eps_aligned": "share of the residual width the alignment shift fills (template fixed)",
    "rho_eps_naive": "the same, uncontrolled: template and alignment mixed",
    "rho_eps_contrast": "share of the width the child's harmful-vs-harmless contrast occupies",
    "refusal_direction_recovery": "|cos| between the top DiD direction and the refusal direction",
    "safety_specificity": "rank on harmless / rank on harmful (≈1 or more: not safety-specific)",
    "alignment_depth_score": "entanglement of safety with capability (0 = chance, 1 = full)",
    "baseline_refusal_rate": "share of harmful prompts the child refuses, nothing removed",
    "abliteration_min_k": "fewest directions whose removal drops refusal below the threshold",
    "abliteration_kl": "first-token KL on harmless prompts at min k (nats): the attack's cost",
}
OPTIONAL = {"rho_eps_contrast", "rho_eps_aligned", "rho_eps_naive"}


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _headline_rows(report: AuditReport) -> list[str]:
    h = report.headline
    rank = f" (rank {h.rank_aligned})" if h.rank_aligned is not None else ""
    rows = []
    for key, meaning in MEANINGS.items():
        value = getattr(h, key)
        if value is None and key in OPTIONAL:
            continue
        label = key.replace("_eps", f"_{h.eps:g}")
        suffix = rank if key == "rho_eps_aligned" else ""
        if key == "alignment_depth_score" and h.depth_chance_level is not None:
            suffix = f" [chance K_c/d = {h.depth_chance_level:.3g}]"
        rows.append(f"{label:<28} {_fmt(value):>10}  {meaning}{suffix}")
    f = report.fragility
    if f is not None:
        over = f.parameter_subset if f.parameter_count is None else f"{f.parameter_count:,} params"
        rows.append(
            f"{'fragility_sharpness':<28} {_fmt(f.sharpness):>10}  top Hessian eigenvalue of "
            f"the refusal loss over {over}"
        )
        forecast = "no fit" if f.forecast_steps is None else f"{f.forecast_steps:.3g} steps"
        rows.append(
            f"{'fragility_exponent':<28} {_fmt(f.exponent):>10}  p in ΔL_A ≈ c·t^p under a "
            f"benign fine-tune; +{f.forecast_margin:g} nats in {forecast}"
        )
    e = report.erosion
    if e is not None:
        rows.append(
            f"{'alignment_kept':<28} {_fmt(e.kept_fraction):>10}  share of the child's alignment "
            f"shift the fine-tune kept (mean e_l, layers {e.window[0]}..{e.window[1]})"
        )
    return rows


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
        *_headline_rows(report),
        "",
        f"verdict: {report.verdict.text}",
    ]
    lines += [f"not measured: {a.section} ({a.reason})" for a in report.absent]
    lines += [f"warning: {w}" for w in report.warnings]
    seconds = sum(s.seconds for s in report.stages)
    stages = ", ".join(f"{s.name} {s.seconds:.1f}" for s in report.stages)
    lines += [
        "",
        f"wrote {out}/ (report.json, directions.safetensors, card.md, plots/) in {seconds:.1f} s",
        f"seconds per stage: {stages}",
    ]
    return "\n".join(lines)
