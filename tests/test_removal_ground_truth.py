"""The ground-truth attack: ordered sweep on a planted curve, and weight orthogonalisation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from depthcard.lab import removal_ground_truth as gt
from depthcard.schemas.gemma_calibration import RemovalPoint
from tests.tiny_gemma import tiny_gemma_base

# Planted: (layer, k) → (refusal share, broken share, KL). Layer 3 reaches coherence at k = 2
# (KL 0.4); layer 5 at k = 4 but cheaper (KL 0.2); layer 7 only by breaking the model, and a
# later k of layer 3 that would be cheaper still must never be judged (the sweep stops there).
PLANTED = {
    (3, 1): (0.6, 0.0, 0.1), (3, 2): (0.05, 0.0, 0.4), (3, 3): (0.0, 0.0, 0.01),
    (5, 1): (0.8, 0.0, 0.05), (5, 2): (0.5, 0.0, 0.1), (5, 3): (0.2, 0.05, 0.15),
    (5, 4): (0.08, 0.02, 0.2),
    (7, 1): (0.5, 0.3, 0.5), (7, 2): (0.0, 0.9, 2.0), (7, 3): (0.0, 1.0, 3.0),
}  # fmt: skip


def planted(layer: int, k: int) -> RemovalPoint:
    refusal, broken, kl = PLANTED.get((layer, k), (0.9, 0.0, 0.0))
    return RemovalPoint(method="direction", layer=layer, k=k, refusal_share=refusal,
                        compliance_share=1 - refusal - broken, broken_share=broken, kl=kl,
                        coherent=refusal < 0.1 and broken <= 0.1)  # fmt: skip


def test_sweep_finds_the_cheapest_coherent_point_on_a_planted_curve() -> None:
    judged: list[tuple[int, int]] = []

    def evaluate(layer: int, k: int) -> RemovalPoint:
        judged.append((layer, k))
        return planted(layer, k)

    points = gt.direction_sweep([3, 5, 7], 3, evaluate)
    # k in order per layer, stopping at the first coherent k; k_max bounds layer 5 at 3
    assert judged == [(3, 1), (3, 2), (5, 1), (5, 2), (5, 3), (7, 1), (7, 2), (7, 3)]
    best = gt.cheapest(points)
    assert (best.layer, best.k, best.kl) == (3, 2, 0.4)
    deeper = gt.direction_sweep([3, 5, 7], 4, planted)
    best = gt.cheapest(deeper)
    assert (best.layer, best.k, best.kl) == (5, 4, 0.2)  # cheaper in KL though more directions
    assert gt.cheapest([p for p in deeper if p.layer == 7]) is None  # only by breaking


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    folder = tiny_gemma_base(tmp_path_factory.mktemp("g"), layers=3)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():  # non-trivial post-norm scales, so g ⊙ r̂ differs from r̂
        for layer in model.model.layers:
            layer.post_attention_layernorm.weight.normal_(0, 0.5)
            layer.post_feedforward_layernorm.weight.normal_(0, 0.5)
    return model


def _stream(model, ids) -> list[torch.Tensor]:
    """Residual stream at every point, final-norm free (the last block's output by hook)."""
    rows = []
    handle = model.model.layers[-1].register_forward_hook(lambda m, a, o: rows.append(o))
    try:
        out = model(input_ids=ids, output_hidden_states=True)
    finally:
        handle.remove()
    return [*out.hidden_states[:-1], rows[0][0] if isinstance(rows[0], tuple) else rows[0]]


def test_orthogonalised_weights_remove_the_direction_from_every_point(gemma) -> None:
    torch.manual_seed(1)
    r = torch.randn(gemma.config.hidden_size)
    r_hat = r / r.norm()
    ids = torch.randint(6, gemma.config.vocab_size, (2, 7))
    before = {k: v.clone() for k, v in gemma.state_dict().items()}
    with torch.no_grad():
        plain = [float((h @ r_hat).abs().max()) for h in _stream(gemma, ids)]
        with gt.orthogonalised(gemma, r):
            inside = [float((h @ r_hat).abs().max()) for h in _stream(gemma, ids)]
            assert torch.equal(gemma.lm_head.weight, before["lm_head.weight"])  # head untouched
    assert min(plain) > 1e-2
    assert max(inside) < 1e-4 * max(plain)
    after = gemma.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored exactly
    assert gemma.lm_head.weight is gemma.model.embed_tokens.weight  # tie restored


def test_projecting_r_instead_of_g_r_leaves_the_direction_in(gemma, monkeypatch) -> None:
    """Break the rule on purpose: ignore the post-norm scale and r̂ leaks back in."""
    monkeypatch.setattr(gt, "_unit_written", lambda d, norm: d.double() / d.double().norm())
    r = torch.randn(gemma.config.hidden_size)
    ids = torch.randint(6, gemma.config.vocab_size, (2, 7))
    with torch.no_grad(), gt.orthogonalised(gemma, r):
        inside = [float((h @ (r / r.norm())).abs().max()) for h in _stream(gemma, ids)]
    assert max(inside) > 1e-2


def test_contrast_basis_starts_with_the_mean_difference() -> None:
    torch.manual_seed(0)
    s, h = torch.randn(12, 8) + torch.tensor([3.0] + [0.0] * 7), torch.randn(10, 8)
    basis = gt.contrast_basis(s, h, 4)
    r = (s.mean(0) - h.mean(0)).double()
    assert basis.shape == (4, 8)
    assert torch.allclose(basis[0], r / r.norm())
    assert torch.allclose(basis @ basis.T, torch.eye(4, dtype=basis.dtype), atol=1e-10)
