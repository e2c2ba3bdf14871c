"""Singular spectra: effective rank ρ_ε, energy residuals, top directions, subspace angles.

All functions are pure and work in float64 (the matrices are small: prompts × d_model).
Definitions: docs/metrics.md, "Effective rank" and "Cross-domain shared directions".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_EPS = (0.01, 0.05, 0.10)


@dataclass(frozen=True)
class RankResult:
    """Effective ranks of one matrix, uncentered and row-centered."""

    rows: int
    max_rank: int
    zero: bool
    frobenius_norm: float
    uncentered: dict[float, int]
    centered: dict[float, int]
    energy_residual: float | None
    energy_residual_centered: float | None


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """σ_1 ≥ σ_2 ≥ … of a (rows, d) matrix, in float64."""
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
    if matrix.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    return torch.linalg.svdvals(matrix.to(torch.float64))


def effective_rank(sigma: torch.Tensor, eps: float) -> int:
    """rank_ε = min{k : Σ_{i≤k} σ_i² ≥ (1−ε) Σ σ_i²}; 0 for an all-zero spectrum."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"ε must be in [0, 1), got {eps}")
    energy = sigma.to(torch.float64) ** 2
    total = float(energy.sum())
    if total <= 0.0:
        return 0
    cumulative = torch.cumsum(energy, 0) / total
    # Tiny slack so that exactly-(1-ε) energy counts as reached despite rounding.
    k = int(torch.searchsorted(cumulative, torch.tensor(1.0 - eps - 1e-12, dtype=torch.float64)))
    return min(k + 1, sigma.numel())


def energy_residual(sigma: torch.Tensor) -> float | None:
    """1 − σ_1²/Σσ_i²: the energy outside the top direction; None for a zero matrix."""
    energy = sigma.to(torch.float64) ** 2
    total = float(energy.sum())
    if total <= 0.0:
        return None
    return float(min(1.0, max(0.0, 1.0 - float(energy[0]) / total)))


def is_zero(matrix: torch.Tensor, scale: float, tolerance: float) -> bool:
    """True when ‖M‖_F ≤ tolerance · scale · √rows (scale: a typical row norm)."""
    norm = float(torch.linalg.matrix_norm(matrix.to(torch.float64))) if matrix.numel() else 0.0
    rows = max(matrix.shape[0], 1)
    return norm <= tolerance * max(scale, 1e-30) * rows**0.5


def rank_stats(
    matrix: torch.Tensor,
    eps: tuple[float, ...] = DEFAULT_EPS,
    *,
    scale: float = 1.0,
    tolerance: float = 1e-6,
) -> RankResult:
    """Effective rank of `matrix` (rows, d) at each ε, uncentered and row-centered.

    A matrix that is zero within `tolerance` of the activation `scale` gets rank 0 and no
    residual: the two models agree there, and the spectrum of rounding noise would
    otherwise look full-rank.
    """
    rows, d = matrix.shape
    m64 = matrix.to(torch.float64)
    zero = is_zero(m64, scale, tolerance)
    norm = float(torch.linalg.matrix_norm(m64)) if m64.numel() else 0.0
    if zero:
        zeros = {e: 0 for e in eps}
        return RankResult(rows, min(rows, d), True, norm, zeros, dict(zeros), None, None)
    sigma = singular_values(m64)
    centered = m64 - m64.mean(dim=0, keepdim=True)
    centered_zero = is_zero(centered, scale, tolerance)
    sigma_c = torch.zeros(0, dtype=torch.float64) if centered_zero else singular_values(centered)
    return RankResult(
        rows=rows,
        max_rank=min(rows, d),
        zero=False,
        frobenius_norm=norm,
        uncentered={e: effective_rank(sigma, e) for e in eps},
        centered={e: effective_rank(sigma_c, e) for e in eps},
        energy_residual=energy_residual(sigma),
        energy_residual_centered=None if centered_zero else energy_residual(sigma_c),
    )


def top_right_singular_vectors(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """(k', d) top right singular vectors of `matrix`, k' = min(k, rank); signs made stable.

    Each vector's sign is chosen so that its largest-magnitude coordinate is positive, which
    makes the output deterministic across LAPACK builds.
    """
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    m64 = matrix.to(torch.float64)
    _, s, vh = torch.linalg.svd(m64, full_matrices=False)
    keep = int((s > s.max().clamp_min(1e-300) * 1e-10).sum()) if s.numel() else 0
    vh = vh[: min(k, keep)]
    idx = vh.abs().argmax(dim=1)
    signs = torch.sign(vh.gather(1, idx[:, None])).clamp_min(0) * 2 - 1
    return vh * signs


def abs_cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """|cos(a, b)| in [0, 1]; None when either vector is zero."""
    a64, b64 = a.to(torch.float64).flatten(), b.to(torch.float64).flatten()
    na, nb = float(a64.norm()), float(b64.norm())
    if na == 0.0 or nb == 0.0:
        return None
    return float(min(1.0, abs(float(a64 @ b64)) / (na * nb)))


def subspace_overlap(va: torch.Tensor, vb: torch.Tensor) -> tuple[torch.Tensor, float]:
    """|V_a V_bᵀ| (ka, kb) and the cosine of the smallest principal angle between the spans.

    Rows of `va` and `vb` must be orthonormal. The smallest principal angle's cosine is the
    largest singular value of V_a V_bᵀ.
    """
    product = va.to(torch.float64) @ vb.to(torch.float64).T  # (ka, kb)
    if product.numel() == 0:
        return product.abs(), 0.0
    top = float(torch.linalg.svdvals(product)[0])
    return product.abs().clamp(max=1.0), min(1.0, top)
