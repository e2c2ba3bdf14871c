"""Nulls, placebos and bootstrap intervals for the spectral scores, from captured activations.

No forward passes: every quantity here is recomputed from rows the audit already holds.

- The depth score against a label-permutation null: the harmful and harmless rows are pooled
  and relabelled at random (same sizes, same layers, same capability subspaces).
- Placebo contrasts: the harmless prompts split at random into two groups, one playing the
  harmful side (recovery: halves of the fit prompts; cross-domain: groups as large as the
  domains they are compared with).
- The mean-shift baseline of recovery: the recovery M_DiD's mean row (r_I − r_B) scores.
- ρ_ε of M_DiD and safety specificity against shuffled harmful/harmless labels.
- Percentile bootstrap intervals over prompts (harmful and harmless resampled with
  replacement; the capability subspace held fixed) for recovery, recovery − baseline, depth,
  specificity and ρ_ε(M_DiD) − its relabelled value. ρ_ε alone gets none: it is a rank, and
  resampling concentrates the energy in fewer rows, so every such interval sat below its own
  estimate (docs/metrics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from depthcard.analysis import decomposition, modes, spectrum
from depthcard.analysis.depth_stage import capability_bases
from depthcard.analysis.intervals import percentile_interval, permutation_p_value
from depthcard.analysis.layer_metrics import Captures
from depthcard.schemas.report import depth_null_test

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
    above: bool | None  # p < α from enough permutations; None: too few to test
    permutations: int


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
    p_value = permutation_p_value(score, null)
    test = depth_null_test(p_value, permutations)
    above = None if test == "too-few-permutations" else test == "above-null"
    return NullResult(mean, p95, p_value, vs, above, permutations)


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


def _mean_shift(xs: torch.Tensor, xh: torch.Tensor, cs: torch.Tensor, ch: torch.Tensor):
    """|cos(mean row of X_s − mean X_h, r)|: the recovery M_DiD's mean row scores by itself.

    Paired, the mean row is r_I − r_B, so this is what recovery is whenever the base's own
    contrast r_B is small. Child-only the mean row is r itself, so the baseline is 1 by
    construction and says nothing: `point_nulls` does not compute it there.
    """
    mean_row = xs.mean(0) - xh.mean(0)
    if float(mean_row.norm()) == 0.0:
        return None
    r = cs.to(torch.float64).mean(0) - ch.to(torch.float64).mean(0)
    return spectrum.abs_cosine(mean_row, r)


@dataclass(frozen=True)
class PointNulls:
    """Placebos, baselines and intervals of the headline numbers at l*."""

    recovery_placebo: float | None
    recovery_interval: tuple[float, float] | None
    recovery_baseline: float | None  # the mean-shift baseline
    recovery_beyond_interval: tuple[float, float] | None  # of recovery − baseline
    cross_domain_placebo: float | None
    cross_domain_rows: int | None  # rows per group of that placebo


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
    domain_rows: int | None = None,
) -> PointNulls:
    """Placebos, the mean-shift baseline and bootstrap intervals at `point`.

    Recovery reads `fit` (like the recovery on the card); cross-domain reads `c`, with two
    disjoint random groups of harmless rows of `domain_rows` each (size-matched to the
    domains it is compared with; None: halves).
    """
    gen = torch.Generator().manual_seed(seed)
    fxs, fxh = (x[0] for x in shift_rows(fit, [point]))
    fcs, fch = fit.child_s.rows[:, point], fit.child_h.rows[:, point]
    xh = shift_rows(c, [point])[1][0]
    rows = xh.shape[0] // 2 if domain_rows is None else min(domain_rows, xh.shape[0] // 2)
    rec_p, cross_p = [], []
    contrast_h = xh - xh.mean(0, keepdim=True) if not c.paired else xh
    for _ in range(PLACEBO_SPLITS):
        a, b = _halves(fxh.shape[0], gen)
        value = _recovery(fxh[a], fxh[b], fch[a], fch[b])
        if value is not None:
            rec_p.append(value)
        order = torch.randperm(xh.shape[0], generator=gen)
        a, b = order[:rows], order[rows : 2 * rows]
        cross_p.append(_overlap(contrast_h[a], contrast_h[b], k_domain))
    rec_b, beyond_b = [], []
    for _ in range(bootstraps):
        i_s, i_h = _resample(fxs.shape[0], gen), _resample(fxh.shape[0], gen)
        value = _recovery(fxs[i_s], fxh[i_h], fcs[i_s], fch[i_h])
        base = _mean_shift(fxs[i_s], fxh[i_h], fcs[i_s], fch[i_h]) if fit.paired else None
        if value is not None:
            rec_b.append(value)
            if base is not None:
                beyond_b.append(value - base)
    cross = [x for x in cross_p if x is not None]
    return PointNulls(
        recovery_placebo=_mean(rec_p),
        recovery_interval=percentile_interval(rec_b) if rec_b else None,
        recovery_baseline=_mean_shift(fxs, fxh, fcs, fch) if fit.paired else None,
        recovery_beyond_interval=percentile_interval(beyond_b) if beyond_b else None,
        cross_domain_placebo=_mean(cross),
        cross_domain_rows=rows,
    )


@dataclass(frozen=True)
class LabelNull:
    """A statistic against shuffled harmful/harmless labels, with a bootstrap interval."""

    mean: float
    p_value: float
    interval: tuple[float, float] | None


def _label_null(stat, xs, xh, permutations, gen, side: str) -> tuple[float, float] | None:
    """(null mean, p) of `stat(xs, xh)` under random relabellings of xs ∪ xh (same sizes).

    `side` "below": p = (1 + #null ≤ observed)/(1 + n); "two-sided": on |log| of a ratio.
    """
    observed = stat(xs, xh)
    if observed is None:
        return None
    pooled, n_s, null = torch.cat([xs, xh]), xs.shape[0], []
    for _ in range(permutations):
        order = torch.randperm(pooled.shape[0], generator=gen)
        value = stat(pooled[order[:n_s]], pooled[order[n_s:]])
        if value is not None:
            null.append(value)
    if not null:
        return None
    if side == "below":
        p = permutation_p_value(-observed, [-x for x in null])
    else:
        far = abs(math.log(observed)) if observed > 0 else math.inf
        p = permutation_p_value(far, [abs(math.log(x)) if x > 0 else math.inf for x in null])
    return sum(null) / len(null), p


def spectral_nulls(
    c: Captures,
    point: int,
    *,
    eps: float,
    scale: float,
    tolerance: float,
    permutations: int,
    bootstraps: int,
    seed: int,
) -> tuple[LabelNull | None, LabelNull | None]:
    """ρ_ε of M_DiD and safety specificity against shuffled labels, with bootstrap intervals.

    The null relabels the pooled rows of Δ_aligned (child-only: child rows) over Ds ∪ Dh at
    random, same sizes: it keeps the rows' anisotropy and count (so the rank cap), and
    changes only which prompts are called harmful. ρ_ε of M_DiD beats it when lower (more
    concentrated than any relabelling); its interval is of ρ_ε − one relabelling's ρ_ε per
    resample (duplicated rows lower both alike). Specificity beats its null (≈ 1) when far
    from it either way; its interval is the ratio's own (duplicates lower both ranks alike).
    Specificity is None in child-only audits.
    """
    gen = torch.Generator().manual_seed(seed)
    xs, xh = (x[0] for x in shift_rows(c, [point]))
    d = xs.shape[-1]

    def rho(m: torch.Tensor) -> float:
        return spectrum.rank_stats(m, (eps,), scale=scale, tolerance=tolerance).uncentered[eps] / d

    def did(a: torch.Tensor, b: torch.Tensor) -> float:
        return rho(a - b.mean(0, keepdim=True))

    n = min(xs.shape[0], xh.shape[0])

    def specificity(a: torch.Tensor, b: torch.Tensor) -> float | None:
        harmful = rho(a[:n])
        return rho(b[:n]) / harmful if harmful > 0 else None

    did_null = _label_null(did, xs, xh, permutations, gen, "below")
    spec_null = (
        _label_null(specificity, xs, xh, permutations, gen, "two-sided") if c.paired else None
    )
    did_b, spec_b = [], []
    for _ in range(bootstraps):
        a, b = xs[_resample(xs.shape[0], gen)], xh[_resample(xh.shape[0], gen)]
        pooled, order = torch.cat([a, b]), torch.randperm(a.shape[0] + b.shape[0], generator=gen)
        relabelled = did(pooled[order[: a.shape[0]]], pooled[order[a.shape[0] :]])
        did_b.append(did(a, b) - relabelled)
        if c.paired and (value := specificity(a, b)) is not None:
            spec_b.append(value)

    def result(null, values) -> LabelNull | None:
        if null is None:
            return None
        return LabelNull(null[0], null[1], percentile_interval(values) if values else None)

    return result(did_null, did_b), result(spec_null, spec_b)


def typical_domain_rows(categories: list[str], c: Captures) -> int | None:
    """Median rows per cross-domain group (harmful categories and domain sets): the size the
    cross-domain placebo's groups are given. None when there are no groups."""
    sizes = [categories.count(cat) for cat in sorted(set(categories))]
    sizes += [a.rows.shape[0] for a in c.child_domains or ()]
    return sorted(sizes)[len(sizes) // 2] if sizes else None


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
