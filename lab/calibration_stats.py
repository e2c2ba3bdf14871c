"""Rank statistics for the calibration suite: Spearman's ρ that never returns NaN.

Each prediction of the suite is a rank correlation over a handful of organisms, so the
p-value is exact (every permutation) where that is cheap, and the degenerate inputs a small
family can produce — fewer than three points, a constant column — give None with a reason.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

from scipy.stats import rankdata

EXACT_UP_TO = 8  # 8! = 40,320 permutations; above that a seeded Monte Carlo sample
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
    """One-sided p of Spearman ρ ≥ observed under random pairing (exact for n ≤ 8).

    None when ρ itself is None.
    """
    rho, _ = spearman(x, y)
    if rho is None:
        return None
    rx, ry = list(rankdata(x)), list(rankdata(y))
    if len(rx) <= EXACT_UP_TO:
        perms = itertools.permutations(ry)
        total = math.factorial(len(ry))
    else:
        rng = random.Random(seed)
        perms = (rng.sample(ry, len(ry)) for _ in range(SAMPLES))
        total = SAMPLES
    hits = sum(1 for p in perms if _pearson(rx, list(p)) >= rho - 1e-12)
    return hits / total
