"""Per-layer metrics from captured activations: ranks, directions, recovery, specificity.

Pure: takes `Captures`, returns schema objects plus the direction tensors to save.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from depthcard.analysis import decomposition, directions, spectrum
from depthcard.analysis.capture import Activations
from depthcard.schemas.report import LayerMetrics, RankAtEps, RankStats


@dataclass(frozen=True)
class Captures:
    """Everything captured for one audit; base fields are None in child-only audits."""

    child_s: Activations  # child, chat, harmful
    child_h: Activations  # child, chat, harmless
    base_s: Activations | None = None  # base, chat, harmful
    base_raw_s: Activations | None = None  # base, raw, harmful
    base_h: Activations | None = None  # base, chat, harmless
    third_s: Activations | None = None  # third model, chat, harmful
    child_c: Activations | None = None  # child, chat, capability
    base_c: Activations | None = None  # base, chat, capability
    child_domains: tuple[Activations, ...] = ()  # child, chat, each --domain set
    base_domains: tuple[Activations, ...] = ()  # base, chat, each --domain set

    @property
    def paired(self) -> bool:
        return self.base_s is not None

    def take(self, part: dict[str, list[int]]) -> Captures:
        """The captures of one half of the split (`part`: role → prompt indices).

        Sets the split does not name (domains, the third model) are dropped: no fitted
        quantity reads them.
        """

        def pick(acts: Activations | None, role: str) -> Activations | None:
            return None if acts is None else acts.take(part[role])

        return Captures(
            child_s=pick(self.child_s, "harmful"),
            child_h=pick(self.child_h, "harmless"),
            base_s=pick(self.base_s, "harmful"),
            base_raw_s=pick(self.base_raw_s, "harmful"),
            base_h=pick(self.base_h, "harmless"),
            child_c=pick(self.child_c, "capability") if "capability" in part else None,
            base_c=pick(self.base_c, "capability") if "capability" in part else None,
        )


@dataclass(frozen=True)
class LayerAnalysis:
    layers: list[LayerMetrics]
    tensors: dict[str, torch.Tensor]  # safetensors payload, float32
    warnings: list[str]


def _rank_schema(result: spectrum.RankResult, d: int) -> RankStats:
    """Schema form of a rank result; ρ_ε = rank_ε / d_model."""

    def at(ranks: dict[float, int]) -> list[RankAtEps]:
        return [RankAtEps(eps=e, rank=r, rho=r / d) for e, r in ranks.items()]

    return RankStats(
        rows=result.rows,
        max_rank=result.max_rank,
        zero=result.zero,
        frobenius_norm=result.frobenius_norm,
        uncentered=at(result.uncentered),
        centered=at(result.centered),
        energy_residual=result.energy_residual,
        energy_residual_centered=result.energy_residual_centered,
    )


def _matrices(c: Captures) -> dict[str, torch.Tensor]:
    if not c.paired:
        return {"child_contrast": decomposition.child_contrast(c.child_s.rows, c.child_h.rows)}
    n = min(c.child_s.count, c.child_h.count)  # equal rows keep the specificity ratio fair
    mats = decomposition.four_matrices(
        c.child_s.rows, c.base_s.rows, c.base_raw_s.rows, c.child_h.rows, c.base_h.rows
    )
    mats["aligned_for_specificity"] = mats["aligned"][:n]
    mats["aligned_harmless"] = mats["aligned_harmless"][:n]
    return mats


def _specificity(ranks: dict[str, spectrum.RankResult], eps: float) -> float | None:
    harmful, harmless = ranks["aligned_for_specificity"], ranks["aligned_harmless"]
    if harmful.zero or harmful.uncentered[eps] == 0:
        return None
    return harmless.uncentered[eps] / harmful.uncentered[eps]


def analyse_layers(
    c: Captures,
    eps: tuple[float, ...],
    headline_eps: float,
    k: int,
    tolerance: float,
    fit: Captures | None = None,
) -> LayerAnalysis:
    """Metrics of every residual point l = 0..L and the tensors for directions.safetensors.

    Ranks, norms and projections read every prompt in `c`; the directions (r_l, the top
    singular vectors of M_DiD) and the recovery cosine read only `fit` (the fit half of the
    held-out split; `c` itself when None).
    """
    mats = _matrices(c)
    fit = c if fit is None else fit
    fit_top = _matrices(fit)["did" if fit.paired else "child_contrast"]  # (prompt, point, d)
    r = directions.refusal_direction(fit.child_s, fit.child_h)  # (point, d)
    act_norm = (c.child_s.norm_sums + c.child_h.norm_sums) / (c.child_s.count + c.child_h.count)
    v = directions.alignment_direction(c.child_s, c.base_s) if c.paired else None
    proj = _projections(c, v, act_norm, tolerance)
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    for point in range(r.shape[0]):
        metrics, point_tensors = _point_metrics(
            point,
            mats,
            fit_top[:, point, :],
            r[point],
            None if v is None else v[point],
            float(act_norm[point]),
            eps,
            headline_eps,
            k,
            tolerance,
        )
        extra = {key: vals[point] for key, vals in proj.items()}
        layers.append(metrics.model_copy(update=extra))
        tensors.update(point_tensors)
    warnings = []
    identical = [m.layer for m in layers if m.models_identical]
    if identical:
        warnings.append(
            f"base and child activations are identical at layer(s) {identical}: "
            "alignment changed nothing there (ranks 0, no recovery cosine)"
        )
    return LayerAnalysis(layers, tensors, warnings)


def _point_metrics(
    point: int,
    mats: dict[str, torch.Tensor],
    fit_top: torch.Tensor,
    r: torch.Tensor,
    v: torch.Tensor | None,
    scale: float,
    eps: tuple[float, ...],
    headline_eps: float,
    k: int,
    tolerance: float,
) -> tuple[LayerMetrics, dict[str, torch.Tensor]]:
    """Metrics and saved directions at one residual point (r, v: (d,) float64).

    `fit_top` (prompt, d): M_DiD (or the child contrast) over the fit prompts only.
    """
    d = r.shape[0]
    ranks = {
        name: spectrum.rank_stats(m[:, point, :], eps, scale=scale, tolerance=tolerance)
        for name, m in mats.items()
    }
    top_name = "did" if v is not None else "child_contrast"
    vecs = (
        torch.zeros((0, d), dtype=torch.float64)
        if ranks[top_name].zero
        else spectrum.top_right_singular_vectors(fit_top, k)
    )
    tensors = {
        f"refusal_direction.{point}": r.float().contiguous(),
        f"did_singular_vectors.{point}": vecs.float().contiguous(),
    }
    if v is not None:
        tensors[f"alignment_direction.{point}"] = v.float().contiguous()
    norm_r = float(r.norm())
    metrics = LayerMetrics(
        layer=point,
        ranks={n: _rank_schema(x, d) for n, x in ranks.items() if n in _REPORTED},
        refusal_direction_norm=norm_r,
        activation_norm=scale,
        norm_ratio=norm_r / scale if scale > 0 else 0.0,
        recovery_cosine=spectrum.abs_cosine(vecs[0], r) if len(vecs) else None,
        safety_specificity=_specificity(ranks, headline_eps) if v is not None else None,
        alignment_direction_norm=None if v is None else float(v.norm()),
        models_identical=v is not None and ranks["aligned"].zero and ranks["aligned_harmless"].zero,
    )
    return metrics, tensors


_REPORTED = {"naive", "template", "aligned", "did", "aligned_harmless", "child_contrast"}


def _projections(
    c: Captures, v: torch.Tensor | None, scale: torch.Tensor, tolerance: float
) -> dict[str, list]:
    """s_l of base, child (and third) on v̂_l; e_l where a third model was captured."""
    if v is None:
        return {}
    s_base = directions.projections(c.base_s, v)
    s_child = directions.projections(c.child_s, v)
    out = {"projection_base": s_base.tolist(), "projection_child": s_child.tolist()}
    if c.third_s is not None:
        s_third = directions.projections(c.third_s, v)
        out["projection_third"] = s_third.tolist()
        out["erosion"] = directions.erosion(s_third, s_child, s_base, scale, tolerance)
    return out
