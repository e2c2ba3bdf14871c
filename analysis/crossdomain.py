"""Cross-domain shared directions: do the same few directions guard several domains?

For each domain (a category of the harmful set, or a separate domain set) take the top-k
right singular vectors of Δ_aligned (pair audits) or of the child's contrast (child-only)
at one layer, and compare every pair of domains by |V_a V_bᵀ| and the cosine of their
smallest principal angle. Domain sets (`--domain FILE`) are captured in chat format on both
models like Ds and enter as domains of their own, named after the set. The placebo — two
random halves of the harmless prompts — says what overlap any two prompt groups show.
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


def set_rows(c: Captures, i: int, point: int) -> torch.Tensor:
    """(prompt, d) rows of domain set i at `point`, defined as `domain_rows` is for Ds."""
    child = c.child_domains[i].rows[:, point]
    if c.paired:
        return decomposition.aligned_shift(child, c.base_domains[i].rows[:, point])
    return decomposition.child_contrast(child, c.child_h.rows[:, point])


def cross_domain(
    c: Captures,
    harmful,
    point: int,
    k: int,
    domains: tuple = (),
    placebo: float | None = None,
) -> CrossDomainResult:
    """The cross-domain section at `point`: the harmful set's categories, then each domain
    set (`domains`: loaded sets in the order of `c.child_domains`)."""
    rows = domain_rows(c, point)
    groups: dict[str, torch.Tensor] = {}
    for cat in sorted(set(harmful.categories)):
        groups[cat] = rows[[i for i, x in enumerate(harmful.categories) if x == cat]]
    for i, domain in enumerate(domains):
        name = domain.name if domain.name not in groups else f"{domain.name} (set)"
        groups[name] = set_rows(c, i, point)
    small = sorted(name for name, g in groups.items() if g.shape[0] < max(MIN_ROWS, k))
    bases, counts = {}, {}
    for name, g in groups.items():
        if name in small:
            continue
        vecs = spectrum.top_right_singular_vectors(g, k) if g.any() else None
        if vecs is not None and len(vecs):
            bases[name], counts[name] = vecs, g.shape[0]
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
        layer=point,
        k=k,
        domains=list(bases),
        rows=counts,
        pairs=pairs,
        shared_cosine=shared,
        placebo_cosine=placebo,
    )
    return result
