"""Nulls, placebos and bootstrap intervals for the spectral scores, from captured activations.

No forward passes: every quantity here is recomputed from rows the audit already holds.

- The depth score against a label-permutation null: the harmful and harmless rows are pooled
  and relabelled at random (same sizes, same layers, same capability subspaces).
- Placebo contrasts: the harmless prompts split at random into two halves, one playing the
  harmful side. Recovery, ρ_ε of M_DiD and cross-domain overlaps are recomputed on them.
- Percentile bootstrap intervals over prompts (harmful and harmless resampled with
  replacement; the capability subspace held fixed) for recovery and depth. ρ_ε gets none: it
  is a rank, and resampling (with replacement, or Dirichlet reweighting) concentrates the
  energy in fewer rows, so every such interval sat below its own estimate
  (docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from depthcard.analysis import decomposition, modes, spectrum
from depthcard.analysis.depth_stage import capability_bases
from depthcard.analysis.intervals import percentile_interval, permutation_p_value
from depthcard.analysis.layer_metrics import Captures

PLACEBO_SPLITS = 20  # random harmless halves averaged for each placebo value


def shift_rows(c: Captures, points: range | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """X over Ds and over Dh (layer, prompt, d) float64: Δ_aligned (pair) or child rows.

    M_DiD (or the child contrast) is X_s − mean X_h either way, so relabelling rows of the
    pooled X is relabelling the prompts.
    """
    idx = list(points)
    if c.paired:
        xs = decomposition.aligned_shift(c.child_s.rows[:, idx], c.base_s.rows[:, idx])
        xh = decomposition.aligned_shift(c.child_h.rows[:, idx], c.base_h.rows[:, idx])
    else:
        xs = c.child_s.rows[:, idx].to(torch.float64)
        xh = c.child_h.rows[:, idx].to(torch.float64)
    return xs.transpose(0, 1), xh.transpose(0, 1)


@dataclass(frozen=True)
class DepthInputs:
    """What the depth score reads, prepared once for many relabellings."""

    xs: torch.Tensor  # (layer, harmful prompt, d)
    xh: torch.Tensor  # (layer, harmless prompt, d)
    caps: list[torch.Tensor]  # per layer (K_c, d) orthonormal rows
    chance: float  # K_c / d


def depth_inputs(c: Captures, window: tuple[int, int], requested_k: int) -> DepthInputs:
    k_c, d, caps = capability_bases(c, window, requested_k)
    xs, xh = shift_rows(c, range(window[0], window[1] + 1))
    return DepthInputs(xs, xh, caps, k_c / d)


def depth_value(xs: torch.Tensor, xh: torch.Tensor, inp: DepthInputs) -> float:
    """The depth score (as `modes.depth_score`) of harmful rows `xs` against harmless `xh`."""
    did = xs - xh.mean(1, keepdim=True)  # (layer, prompt, d)
    means = []
    for layer, cap in enumerate(inp.caps):
        safety = modes.safety_modes(did[layer])
        if safety.vectors.shape[0] == 0:
            continue
        e = modes.entanglement(safety.vectors, cap)
        means.append(float((safety.energy / safety.energy.sum() * e).sum()))
    return modes.rescale(sum(means) / len(means) if means else 0.0, inp.chance)


@dataclass(frozen=True)
class NullResult:
    mean: float
    p95: float
    p_value: float
    vs_null: float  # (score − mean)/(1 − mean), clipped to [0, 1]
    above: bool  # score > the null's 95th percentile


def depth_null(inp: DepthInputs, score: float, permutations: int, seed: int) -> NullResult:
    """The depth score under `permutations` random relabellings of Ds ∪ Dh (same sizes)."""
    pooled = torch.cat([inp.xs, inp.xh], dim=1)
    n_s = inp.xs.shape[1]
    gen = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(permutations):
        order = torch.randperm(pooled.shape[1], generator=gen)
        null.append(depth_value(pooled[:, order[:n_s]], pooled[:, order[n_s:]], inp))
    mean = sum(null) / len(null)
    p95 = percentile_interval(null, 0.90)[1]  # the 95th percentile
    vs = 0.0 if mean >= 1.0 else min(1.0, max(0.0, (score - mean) / (1.0 - mean)))
    return NullResult(mean, p95, permutation_p_value(score, null), vs, score > p95)


def _resample(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(n, (n,), generator=gen)


def depth_interval(inp: DepthInputs, bootstraps: int, seed: int) -> tuple[float, float]:
    """Bootstrap 95 % interval of the depth score over prompts."""
    gen = torch.Generator().manual_seed(seed)
    n_s, n_h = inp.xs.shape[1], inp.xh.shape[1]
    values = [
        depth_value(inp.xs[:, _resample(n_s, gen)], inp.xh[:, _resample(n_h, gen)], inp)
        for _ in range(bootstraps)
    ]
    return percentile_interval(values)


def _recovery(xs: torch.Tensor, xh: torch.Tensor, cs: torch.Tensor, ch: torch.Tensor):
    """|cos(v1(X_s − mean X_h), mean cs − mean ch)| at one layer; None where either is 0."""
    did = xs - xh.mean(0, keepdim=True)
    if float(did.norm()) == 0.0:
        return None
    v1 = spectrum.top_right_singular_vectors(did, 1)
    r = cs.to(torch.float64).mean(0) - ch.to(torch.float64).mean(0)
    return spectrum.abs_cosine(v1[0], r) if len(v1) else None


def _halves(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    return order[: n // 2], order[n // 2 :]


@dataclass(frozen=True)
class PointNulls:
    """Placebos and intervals of the headline numbers at l*."""

    recovery_placebo: float | None
    recovery_interval: tuple[float, float] | None
    rho_did_placebo: float | None
    cross_domain_placebo: float | None


def point_nulls(
    c: Captures,
    fit: Captures,
    point: int,
    *,
    eps: float,
    scale: float,
    tolerance: float,
    k_domain: int,
    bootstraps: int,
    seed: int,
) -> PointNulls:
    """Placebos (harmless halves) and bootstrap intervals at `point`.

    Recovery reads `fit` (like the recovery on the card); ρ_ε and cross-domain read `c`.
    """
    gen = torch.Generator().manual_seed(seed)
    fxs, fxh = (x[0] for x in shift_rows(fit, [point]))
    fcs, fch = fit.child_s.rows[:, point], fit.child_h.rows[:, point]
    xs, xh = (x[0] for x in shift_rows(c, [point]))
    d = xs.shape[-1]

    def rho(m: torch.Tensor) -> float:
        return spectrum.rank_stats(m, (eps,), scale=scale, tolerance=tolerance).uncentered[eps] / d

    rec_p, rho_p, cross_p = [], [], []
    contrast_h = xh - xh.mean(0, keepdim=True) if not c.paired else xh
    for _ in range(PLACEBO_SPLITS):
        a, b = _halves(fxh.shape[0], gen)
        value = _recovery(fxh[a], fxh[b], fch[a], fch[b])
        if value is not None:
            rec_p.append(value)
        a, b = _halves(xh.shape[0], gen)
        rho_p.append(rho(xh[a] - xh[b].mean(0, keepdim=True)))
        cross_p.append(_overlap(contrast_h[a], contrast_h[b], k_domain))
    rec_b = []
    for _ in range(bootstraps):
        i_s, i_h = _resample(fxs.shape[0], gen), _resample(fxh.shape[0], gen)
        value = _recovery(fxs[i_s], fxh[i_h], fcs[i_s], fch[i_h])
        if value is not None:
            rec_b.append(value)
    cross = [x for x in cross_p if x is not None]
    return PointNulls(
        recovery_placebo=_mean(rec_p),
        recovery_interval=percentile_interval(rec_b) if rec_b else None,
        rho_did_placebo=_mean(rho_p),
        cross_domain_placebo=_mean(cross),
    )


def _overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float | None:
    """Smallest-angle cosine between the top-k right singular spans of two row groups."""
    if not (a.any() and b.any()):
        return None
    va = spectrum.top_right_singular_vectors(a, k)
    vb = spectrum.top_right_singular_vectors(b, k)
    if not (len(va) and len(vb)):
        return None
    return spectrum.subspace_overlap(va, vb)[1]


def _mean(values: list[float]) -> float | None:
    return min(1.0, sum(values) / len(values)) if values else None
