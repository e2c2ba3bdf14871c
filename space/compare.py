"""Two or more reports on the same axes: one long-format table per metric, one line per report.

Models differ in depth, so per-layer metrics can be drawn against relative depth l/L
(0 = embeddings, 1 = last block) instead of the layer index.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from depthcard.schemas.report import AuditReport, LayerMetrics

Points = list[tuple[float, float]]


def _rho(m: LayerMetrics, eps: float, names: tuple[str, ...]) -> float | None:
    for name in names:
        stats = m.ranks.get(name)
        if stats is not None:
            for r in stats.uncentered:
                if abs(r.eps - eps) < 1e-12:
                    return r.rho
    return None


def _per_layer(value: Callable[[AuditReport, LayerMetrics], float | None]):
    def points(report: AuditReport) -> Points:
        out = [(m.layer, value(report, m)) for m in report.layers]
        return [(x, y) for x, y in out if y is not None]

    return points


def _depth(report: AuditReport) -> Points:
    return [] if report.depth is None else [(x.layer, x.score) for x in report.depth.layers]


def _ablation(measure: str):
    def points(report: AuditReport) -> Points:
        if report.ablation is None:
            return []
        attack = sorted(
            (p for p in report.ablation.curve if p.basis == "attack"), key=lambda p: p.k
        )
        values = [(p.k, getattr(p, measure)) for p in attack]
        return [(k, v) for k, v in values if v is not None]

    return points


# metric label -> (x axis kind, points of one report)
METRICS: dict[str, tuple[str, Callable[[AuditReport], Points]]] = {
    "ρ_ε aligned (child-only: contrast)": (
        "layer",
        _per_layer(lambda r, m: _rho(m, r.headline.eps, ("aligned", "child_contrast"))),
    ),
    "ρ_ε naive": ("layer", _per_layer(lambda r, m: _rho(m, r.headline.eps, ("naive",)))),
    "ρ_ε M_DiD": ("layer", _per_layer(lambda r, m: _rho(m, r.headline.eps, ("did",)))),
    "refusal-direction recovery |cos|": ("layer", _per_layer(lambda r, m: m.recovery_cosine)),
    "‖r_l‖ / activation norm": ("layer", _per_layer(lambda r, m: m.norm_ratio)),
    "safety specificity": ("layer", _per_layer(lambda r, m: m.safety_specificity)),
    "erosion e_l": ("layer", _per_layer(lambda r, m: m.erosion)),
    "depth score": ("layer", _depth),
    "refusal rate vs k (attack basis)": ("k", _ablation("refusal_rate")),
    "refusal log-odds vs k (attack basis)": ("k", _ablation("refusal_score")),
    "first-token KL vs k (attack basis)": ("k", _ablation("kl")),
}
DEFAULT_METRIC = next(iter(METRICS))
COMPARE_COLUMNS = ["x", "value", "report"]


def x_title(metric: str, relative: bool) -> str:
    """Axis title for the metric's x values."""
    if METRICS[metric][0] == "k":
        return "k, directions ablated"
    return "relative depth l / L" if relative else "layer l"


def compare_frame(
    reports: list[tuple[str, AuditReport]], metric: str, relative: bool = False
) -> pd.DataFrame:
    """One row per (report, point) of `metric`; reports without the data add no rows.

    Args:
        reports: (label, report) pairs; labels name the lines.
        metric: a key of METRICS.
        relative: per-layer metrics against l/L instead of l.

    Raises:
        ValueError: an unknown metric.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    axis, points = METRICS[metric]
    rows = []
    for label, report in reports:
        last = max(len(report.layers) - 1, 1)
        scale = 1.0 / last if relative and axis == "layer" else 1.0
        rows += [{"x": x * scale, "value": y, "report": label} for x, y in points(report)]
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def missing_from(reports: list[tuple[str, AuditReport]], metric: str) -> list[str]:
    """Labels of the reports that have no data for `metric`."""
    points = METRICS[metric][1]
    return [label for label, report in reports if not points(report)]
