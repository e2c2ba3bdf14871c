"""Cross-domain shared directions: do the same few directions guard several domains?

For each domain (a category of the harmful set, or a separate domain set) take the top-k
right singular vectors of Δ_aligned (pair audits) or of the child's contrast (child-only)
at one layer, and compare every pair of domains by |V_a V_bᵀ| and the cosine of their
smallest principal angle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import torch

from depthcard.analysis import decomposition, spectrum
from depthcard.analysis.layer_metrics import Captures
from depthcard.schemas.report import CrossDomain, DomainOverlap

MIN_ROWS = 3


@dataclass
class CrossDomainResult:
    section: CrossDomain | None
    absent: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def domain_rows(c: Captures, point: int) -> torch.Tensor:
    """(prompt, d) rows over Ds at `point`: Δ_aligned, or the child contrast when unpaired."""
    if c.paired:
        return decomposition.aligned_shift(c.child_s.rows[:, point], c.base_s.rows[:, point])
    return decomposition.child_contrast(c.child_s.rows[:, point], c.child_h.rows[:, point])


def overlaps(bases: dict[str, torch.Tensor]) -> tuple[list[DomainOverlap], list[list[float]]]:
    """Pairwise overlaps and the domains×domains smallest-angle cosine matrix."""
    names = list(bases)
    shared = [[1.0 if i == j else 0.0 for j in range(len(names))] for i in range(len(names))]
    pairs = []
    for (i, a), (j, b) in combinations(enumerate(names), 2):
        matrix, top = spectrum.subspace_overlap(bases[a], bases[b])
        shared[i][j] = shared[j][i] = top
        pairs.append(DomainOverlap(a=a, b=b, overlap=matrix.tolist(), smallest_angle_cosine=top))
    return pairs, shared


def cross_domain(c: Captures, harmful, point: int, k: int) -> CrossDomainResult:
    """The cross-domain section at `point` from the harmful set's categories."""
    rows = domain_rows(c, point)
    groups: dict[str, list[int]] = {}
    for i, cat in enumerate(harmful.categories):
        groups.setdefault(cat, []).append(i)
    small = sorted(name for name, idx in groups.items() if len(idx) < max(MIN_ROWS, k))
    bases, counts = {}, {}
    for name, idx in sorted(groups.items()):
        if name in small:
            continue
        vecs = spectrum.top_right_singular_vectors(rows[idx], k) if rows[idx].any() else None
        if vecs is not None and len(vecs):
            bases[name], counts[name] = vecs, len(idx)
    result = CrossDomainResult(section=None)
    if small:
        result.warnings.append(
            f"domains with fewer than {max(MIN_ROWS, k)} prompts skipped: {', '.join(small)}"
        )
    if len(bases) < 2:
        result.absent.append(
            dict(
                section="cross_domain",
                reason="fewer than two domains with enough prompts and a non-zero shift",
            )
        )
        return result
    pairs, shared = overlaps(bases)
    result.section = CrossDomain(
        layer=point, k=k, domains=list(bases), rows=counts, pairs=pairs, shared_cosine=shared
    )
    return result
