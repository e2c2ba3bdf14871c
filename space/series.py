"""Long-format tables behind the Space's interactive plots, one function per plot.

Each `xxx_frame(report)` returns a pandas DataFrame with one row per plotted point and a
`series` column naming the line it belongs to; an empty frame (with the same columns) means
the report has no data for that plot. Gradio's LinePlot draws them with hover tooltips.
"""

from __future__ import annotations

import pandas as pd

from depthcard.schemas.report import AuditReport

# matrix name -> legend label (the four matrices of docs/metrics.md, plus the child-only
# contrast). Short, so a legend never cuts one; `RANK_CAPTION` says what each one is.
MATRIX_LABELS = {
    "naive": "M_naive",
    "template": "M_template",
    "aligned": "M_aligned",
    "did": "M_DiD",
    "aligned_harmless": "M_aligned harmless",
    "child_contrast": "child contrast",
}
RANK_CAPTION = (
    "M_naive: child − base, uncontrolled; M_template: format only; M_aligned: template held "
    "fixed; M_DiD: harmful beyond harmless; M_aligned harmless: M_aligned on harmless prompts; "
    "child contrast: the child's harmful − harmless (child-only audits)."
)
PROJECTION_LABELS = {
    "projection_base": "base",
    "projection_child": "child",
    "projection_third": "third",
}


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def rank_frame(report: AuditReport) -> pd.DataFrame:
    """ρ_ε (headline ε) and rank_ε per layer for every matrix in the report."""
    eps = report.headline.eps
    rows = []
    for m in report.layers:
        for name, label in MATRIX_LABELS.items():
            stats = m.ranks.get(name)
            match = [r for r in stats.uncentered if abs(r.eps - eps) < 1e-12] if stats else []
            if match:
                rows.append(
                    {"layer": m.layer, "rho": match[0].rho, "rank": match[0].rank, "series": label}
                )
    return _frame(rows, ["layer", "rho", "rank", "series"])


def recovery_frame(report: AuditReport) -> pd.DataFrame:
    """Refusal-direction recovery |cos| per layer, with ‖r_l‖/activation norm for the tooltip."""
    rows = [
        {
            "layer": m.layer,
            "recovery": m.recovery_cosine,
            "norm_ratio": m.norm_ratio,
            "series": "recovery |cos(v1(M_DiD), r_l)|",
        }
        for m in report.layers
        if m.recovery_cosine is not None
    ]
    return _frame(rows, ["layer", "recovery", "norm_ratio", "series"])


def projection_frame(report: AuditReport) -> pd.DataFrame:
    """Mean projections s_l of base, child (and third) on the per-layer alignment direction."""
    rows = [
        {"layer": m.layer, "projection": getattr(m, field), "series": label}
        for field, label in PROJECTION_LABELS.items()
        for m in report.layers
        if getattr(m, field) is not None
    ]
    return _frame(rows, ["layer", "projection", "series"])


def erosion_frame(report: AuditReport) -> pd.DataFrame:
    """Normalised erosion e_l = (s_F − s_B)/(s_I − s_B) per layer (three-model audits)."""
    rows = [
        {"layer": m.layer, "erosion": m.erosion, "series": "erosion e_l (1 = kept)"}
        for m in report.layers
        if m.erosion is not None
    ]
    return _frame(rows, ["layer", "erosion", "series"])


def depth_frame(report: AuditReport) -> pd.DataFrame:
    """Depth score and entanglement per analysed layer, with the chance level as a line."""
    columns = ["layer", "value", "series"]
    dp = report.depth
    if dp is None:
        return _frame([], columns)
    rows = []
    for x in dp.layers:
        rows.append({"layer": x.layer, "value": x.score, "series": "depth score (0 = chance)"})
        rows.append({"layer": x.layer, "value": x.entanglement, "series": "entanglement e"})
        rows.append({"layer": x.layer, "value": dp.chance_level, "series": "chance K_c/d"})
    return _frame(rows, columns)


def ablation_frame(report: AuditReport) -> pd.DataFrame:
    """First-token KL against k, per basis (single-direction points left out)."""
    columns = ["k", "kl", "series"]
    ab = report.ablation
    if ab is None:
        return _frame([], columns)
    points = sorted((p for p in ab.curve if p.basis != "single"), key=lambda p: (p.basis, p.k))
    rows = [{"k": p.k, "kl": p.kl, "series": f"{p.basis} basis"} for p in points]
    return _frame(rows, columns)


# share field of an AblationPoint -> its series on the attack basis
SHARES = {"refusal_rate": "refusal", "compliance_share": "compliance", "broken_share": "broken"}


def ablation_shares_frame(report: AuditReport) -> pd.DataFrame:
    """The judged shares of the answers at every judged k: refusal, compliance and broken on
    the attack basis (where min k is read), the svd basis's refusal beside it, and the refusal
    threshold min k must get under, as a line over the judged ks.

    Only points the judge read (`refusal_rate` set) are drawn; the first-token log-odds score
    is not a share of answers and is not mixed in. Five series at most, so the legend fits.
    """
    columns = ["k", "share", "series"]
    ab = report.ablation
    if ab is None:
        return _frame([], columns)
    judged = sorted(
        (p for p in ab.curve if p.basis != "single" and p.refusal_rate is not None),
        key=lambda p: (p.basis, p.k),
    )
    rows = [
        {"k": p.k, "share": getattr(p, field), "series": word}
        for p in judged
        if p.basis == "attack"
        for field, word in SHARES.items()
        if getattr(p, field) is not None
    ]
    rows += [{"k": p.k, "share": p.refusal_rate, "series": f"{p.basis} refusal"}
             for p in judged if p.basis != "attack"]  # fmt: skip
    threshold = f"threshold {100 * ab.threshold:g} %"
    rows += [{"k": k, "share": ab.threshold, "series": threshold}
             for k in sorted({p.k for p in judged})]  # fmt: skip
    return _frame(rows, columns)


def species_frame(report: AuditReport) -> pd.DataFrame:
    """Mode tracks (species) alive at each layer, for base and child, and alignment-specific
    child modes per layer."""
    columns = ["layer", "count", "series"]
    modes = report.modes
    if modes is None:
        return _frame([], columns)
    rows = []
    for lm in modes.layers:
        layer = lm.layer
        for name, tracks in (("base", modes.base_species), ("child", modes.child_species)):
            if name == "base" and not modes.base_species and not lm.base_variance_share:
                continue
            alive = sum(t.first_layer <= layer <= t.last_layer for t in tracks)
            rows.append({"layer": layer, "count": alive, "series": f"{name} species"})
        rows.append(
            {
                "layer": layer,
                "count": len(lm.alignment_specific),
                "series": "alignment-specific child modes",
            }
        )
    return _frame(rows, columns)
