"""Rank statistics for the calibration suite: Spearman's ρ that never returns NaN.

Each prediction of the suite is a rank correlation over a handful of organisms, so the
p-value is exact (every permutation, counted by a dynamic programme over subsets) for the
family sizes the suite uses, and the degenerate inputs a small family can produce — fewer
than three points, a constant column — give None with a reason.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

EXACT_UP_TO = 14  # 2¹⁴·14 DP steps, a few seconds; above that a seeded Monte Carlo sample
SAMPLES = 20_000


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return max(-1.0, min(1.0, cov / math.sqrt(va * vb)))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, str | None]:
    """Spearman's ρ (Pearson on average ranks, so ties are handled), or (None, why).

    Raises:
        ValueError: x and y differ in length.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values, got {len(x)} and {len(y)}")
    if len(x) < 3:
        return None, f"only {len(x)} organisms with both numbers (a rank correlation needs 3)"
    if not all(math.isfinite(v) for v in [*x, *y]):
        return None, "a value is not finite"
    for name, col in (("x", x), ("y", y)):
        if len(set(col)) == 1:
            return None, f"{name} is constant ({col[0]:.4g} for all {len(col)}): no ranking"
    return _pearson(list(rankdata(x)), list(rankdata(y))), None


def permutation_p(x: Sequence[float], y: Sequence[float], seed: int = 0) -> float | None:
    """One-sided p of Spearman ρ ≥ observed under random pairing; exact for n ≤ 14.

    None when ρ itself is None. Above 14 organisms, a seeded Monte Carlo sample.
    """
    rho, _ = spearman(x, y)
    if rho is None:
        return None
    rx, ry = list(rankdata(x)), list(rankdata(y))
    if len(rx) <= EXACT_UP_TO:
        return _exact_p(rx, ry)
    rng = random.Random(seed)
    hits = sum(1 for _ in range(SAMPLES) if _pearson(rx, rng.sample(ry, len(ry))) >= rho - 1e-12)
    return hits / SAMPLES


def _exact_p(rx: Sequence[float], ry: Sequence[float]) -> float:
    """Share of all n! pairings with Σ rx·ry_π ≥ observed: the exact one-sided p.

    With the rank multisets fixed, Pearson on ranks rises with Σ rx·ry alone, so counting
    pairings by that sum suffices. Average ranks are multiples of ½, so doubled ranks make
    the sum an integer; `ways[mask]` counts, per sum, the ways to pair x's first popcount(mask)
    ranks with the y ranks in `mask` (2ⁿ·n steps instead of n!).
    """
    a = [round(2 * v) for v in rx]
    b = [round(2 * v) for v in ry]
    n, top = len(a), sum(sorted(a)[i] * sorted(b)[i] for i in range(len(a)))
    observed = sum(p * q for p, q in zip(a, b, strict=True))
    ways = {0: np.zeros(top + 1, dtype=np.int64)}
    ways[0][0] = 1
    for mask in range(1 << n):  # masks in increasing order: every subset before its supersets
        counts = ways.pop(mask, None)
        if counts is None:
            continue
        i = mask.bit_count()
        if i == n:
            total = int(counts.sum())
            return float(counts[observed:].sum()) / total
        for j in range(n):
            if not mask >> j & 1:
                shift = a[i] * b[j]
                nxt = ways.setdefault(mask | 1 << j, np.zeros(top + 1, dtype=np.int64))
                nxt[shift:] += counts[: top + 1 - shift]
    raise AssertionError("unreachable: the full mask is always reached")
