"""Bootstrap percentile intervals and permutation p-values (pure, no torch).

Wilson intervals for shares live beside the judges (`judges.wilson_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(low, high) empirical quantiles holding `level` of `values` (linear interpolation)."""
    if not values:
        raise ValueError("no values to take an interval of")
    xs = sorted(values)
    tail = (1.0 - level) / 2
    return _quantile(xs, tail), _quantile(xs, 1.0 - tail)


def _quantile(xs: list[float], q: float) -> float:
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def permutation_p_value(observed: float, null: Sequence[float]) -> float:
    """(1 + #{null ≥ observed}) / (1 + n): never 0, exact under exchangeability."""
    return (1 + sum(1 for x in null if x >= observed)) / (1 + len(null))
