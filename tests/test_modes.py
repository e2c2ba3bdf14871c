"""Known answers for the mode catalogue and the alignment depth score."""

import pytest
import torch

from depthcard.analysis import modes


def orthonormal(k, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0].T


def test_depth_orders_entangled_above_separable_and_chance_is_zero():
    d, k_c = 64, 8
    basis = orthonormal(k_c + 2, d, 0)
    capability = basis[:k_c]
    inside = modes.SafetyModes(capability[:1].clone(), torch.tensor([1.0], dtype=torch.float64))
    outside = modes.SafetyModes(
        basis[k_c : k_c + 1].clone(), torch.tensor([1.0], dtype=torch.float64)
    )
    deep = modes.depth_at_layer(3, inside, capability)
    thin = modes.depth_at_layer(3, outside, capability)
    assert deep.entanglement == pytest.approx(1.0) and deep.score == pytest.approx(1.0)
    assert thin.entanglement == pytest.approx(0.0, abs=1e-12) and thin.score == 0.0
    assert deep.fraction_above_2x_chance == 1.0 and thin.fraction_above_2x_chance == 0.0


def test_half_inside_direction_scores_between():
    d, k_c = 64, 8
    basis = orthonormal(k_c + 1, d, 1)
    s = (basis[0] + basis[k_c]) / 2**0.5  # half its energy inside C
    layer = modes.depth_at_layer(0, modes.SafetyModes(s[None], torch.ones(1)), basis[:k_c])
    assert layer.entanglement == pytest.approx(0.5)
    assert layer.score == pytest.approx((0.5 - k_c / d) / (1 - k_c / d))


def test_random_directions_sit_at_the_chance_level():
    d, k_c, n = 64, 8, 4000
    capability = orthonormal(k_c, d, 2)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    v /= v.norm(dim=1, keepdim=True)
    e = modes.entanglement(v, capability)
    # e ~ Beta(k/2, (d-k)/2): mean k/d, sd sqrt(2k(d-k)/(d²(d+2)))
    sd = (2 * k_c * (d - k_c) / (d**2 * (d + 2))) ** 0.5 / n**0.5
    assert abs(float(e.mean()) - k_c / d) < 4 * sd


def test_safety_modes_hold_ninety_percent_of_the_energy():
    d = 32
    basis = orthonormal(3, d, 4)
    g = torch.Generator().manual_seed(5)
    coeff = torch.randn(50, 3, generator=g, dtype=torch.float64) * torch.tensor([10.0, 6.0, 0.1])
    sm = modes.safety_modes(coeff @ basis)
    assert sm.vectors.shape[0] == 2  # 10² alone is under 90%; 10² + 6² ≫ 0.1²
    assert float(sm.energy.sum()) >= 0.9
    empty = modes.safety_modes(torch.zeros(5, d))
    assert empty.vectors.shape == (0, d)
    assert modes.depth_at_layer(0, empty, basis).safety_modes == 0


def test_species_link_slowly_rotating_modes_into_one_track_each():
    d = 16
    base = orthonormal(4, d, 6)
    layers = []
    for layer in range(5):
        angle = 0.1 * layer
        rot = base.clone()
        rot[0] = torch.cos(torch.tensor(angle)) * base[0] + torch.sin(torch.tensor(angle)) * base[3]
        rot[0] /= rot[0].norm()
        layers.append(rot[:3])
    shares = [torch.tensor([0.5, 0.3, 0.2])] * 5
    species = modes.link_species(layers, shares, tau=0.8)
    assert len(species) == 3
    assert all(s.first_layer == 0 and s.last_layer == 4 for s in species)
    broken = layers[:2] + [orthonormal(3, d, 99)] + layers[3:]
    assert len(modes.link_species(broken, shares, tau=0.8)) > 3


def test_principal_modes_and_best_match():
    d = 12
    basis = orthonormal(2, d, 7)
    g = torch.Generator().manual_seed(8)
    rows = torch.randn(40, 2, generator=g, dtype=torch.float64) * torch.tensor([5.0, 1.0]) @ basis
    vecs, share = modes.principal_modes(rows + 3.0, 4)
    assert vecs.shape[0] == 2 and float(share.sum()) == pytest.approx(1.0)
    assert abs(float(vecs[0] @ basis[0])) > 0.99
    assert modes.best_match(vecs, basis) == pytest.approx([1.0, 1.0], abs=1e-2)
    assert modes.principal_modes(torch.ones(5, d), 3)[0].shape == (0, d)


def test_overall_depth_averages_layers_with_modes():
    layers = [
        modes.DepthAtLayer(
            layer=1, safety_modes=1, entanglement=0.5, score=0.0, fraction_above_2x_chance=1.0
        ),
        modes.DepthAtLayer(
            layer=2, safety_modes=0, entanglement=0.0, score=0.0, fraction_above_2x_chance=0.0
        ),
    ]
    total = modes.depth_score(layers, k_c=8, d=64, child_only=False)
    assert total.score == pytest.approx((0.5 - 0.125) / 0.875)
    assert total.chance_level == pytest.approx(0.125)
