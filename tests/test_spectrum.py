"""Known-answer tests for effective rank, energy residuals and subspace angles."""

import math

import pytest
import torch

from depthcard.analysis import spectrum


def planted(rank: int, rows: int = 40, d: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(rows, rank, generator=g, dtype=torch.float64)
    right = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))[0].T
    return left @ right


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_planted_rank_is_recovered(rank):
    stats = spectrum.rank_stats(planted(rank), (0.01, 0.05, 0.10), scale=1.0)
    assert stats.uncentered[0.01] == rank
    assert stats.max_rank == 40
    assert not stats.zero


def test_effective_rank_energy_threshold():
    sigma = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)  # energies 9, 4, 1 of 14
    assert spectrum.effective_rank(sigma, 0.5) == 1  # 9/14 = 0.64 ≥ 0.5
    assert spectrum.effective_rank(sigma, 0.10) == 2  # 13/14 = 0.93 ≥ 0.9
    assert spectrum.effective_rank(sigma, 0.05) == 3  # 0.93 < 0.95
    assert spectrum.energy_residual(sigma) == pytest.approx(5 / 14)


def test_zero_matrix_gives_rank_zero_and_no_residual():
    stats = spectrum.rank_stats(torch.zeros(10, 16), (0.05,), scale=3.0)
    assert stats.zero and stats.uncentered[0.05] == 0 and stats.centered[0.05] == 0
    assert stats.energy_residual is None and stats.energy_residual_centered is None


def test_rounding_noise_below_tolerance_counts_as_zero():
    noise = torch.randn(10, 16) * 1e-9
    assert spectrum.rank_stats(noise, (0.05,), scale=1.0, tolerance=1e-6).zero
    assert not spectrum.rank_stats(noise * 1e6, (0.05,), scale=1.0, tolerance=1e-6).zero


def test_centering_removes_a_shared_offset():
    d = 32
    offset = torch.zeros(d, dtype=torch.float64)
    offset[0] = 10.0
    rows = planted(2, rows=30, d=d) * 0.01 + offset
    stats = spectrum.rank_stats(rows, (0.05,), scale=1.0)
    assert stats.uncentered[0.05] == 1  # the offset dominates
    assert stats.centered[0.05] == 2  # centered: the planted rank-2 part
    assert stats.energy_residual < 1e-3 < stats.energy_residual_centered


def test_rank_single_row_and_wide_matrix():
    stats = spectrum.rank_stats(torch.ones(1, 8), (0.05,), scale=1.0)
    assert stats.uncentered[0.05] == 1 and stats.max_rank == 1
    assert stats.centered[0.05] == 0  # one row centered is zero


def test_top_vectors_recover_a_planted_direction_with_stable_sign():
    d = 48
    u = torch.randn(d, dtype=torch.float64)
    u /= u.norm()
    rows = torch.randn(25, 1, dtype=torch.float64) @ u[None] + 1e-4 * torch.randn(25, d)
    v = spectrum.top_right_singular_vectors(rows, 3)
    assert v.shape == (3, d)
    assert abs(float(v[0] @ u)) > 0.999
    assert float(v[0][v[0].abs().argmax()]) > 0
    assert torch.allclose(v @ v.T, torch.eye(3, dtype=torch.float64), atol=1e-9)


def test_top_vectors_truncate_at_numerical_rank():
    v = spectrum.top_right_singular_vectors(planted(2), 8)
    assert v.shape[0] == 2


def test_abs_cosine_and_zero_vectors():
    a = torch.tensor([1.0, 0.0])
    assert spectrum.abs_cosine(a, torch.tensor([-2.0, 0.0])) == pytest.approx(1.0)
    assert spectrum.abs_cosine(a, torch.tensor([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert spectrum.abs_cosine(a, torch.zeros(2)) is None


def test_subspace_overlap_angles():
    eye = torch.eye(4, dtype=torch.float64)
    same, top = spectrum.subspace_overlap(eye[:2], eye[[1, 0]])
    assert top == pytest.approx(1.0)
    assert torch.allclose(same, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    _, orth = spectrum.subspace_overlap(eye[:2], eye[2:])
    assert orth == pytest.approx(0.0)
    tilted = torch.tensor([[math.cos(0.3), math.sin(0.3), 0, 0]], dtype=torch.float64)
    _, t = spectrum.subspace_overlap(eye[:1], tilted)
    assert t == pytest.approx(math.cos(0.3))


def test_bad_eps_is_rejected():
    with pytest.raises(ValueError):
        spectrum.effective_rank(torch.ones(2), 1.0)
