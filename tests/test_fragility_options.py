"""The fragility stage's cost options: forward-over-reverse HVPs, the relative-change stop
and θ_S centred on l*, each against the default it would replace."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from depthcard.analysis.curvature import (
    forward_over_reverse_product,
    hessian_vector_product,
    power_iteration,
    random_unit,
)
from depthcard.analysis.fragility import (
    FragilitySettings,
    fragility,
    loss_terms,
    scored_batches,
    select_parameters,
    subset_terms,
)
from depthcard.analysis.fragility_subset import around_selected
from tests.test_fragility import (
    _trainable_subset,
    float64_llama,
    one_thread,
    quadratic,
    random_ids,
    tiny_inputs,
)
from tests.tiny_models import make_llama

__all__ = ["one_thread"]  # the autouse fixture, imported to apply here too
CPU = torch.device("cpu")


def flat(vector) -> torch.Tensor:
    return torch.cat([x.flatten() for x in vector])


def relative_gap(a, b) -> float:
    a, b = flat(a), flat(b)
    return float((a - b).norm() / a.norm())


def test_forward_over_reverse_equals_double_backward_in_float64():
    model, params, batches = _trainable_subset()
    for seed in (3, 4):
        v = random_unit(params, seed=seed)
        plain = hessian_vector_product(loss_terms(model, batches), params, v)
        forward = forward_over_reverse_product(subset_terms(model, batches, params), params, v)
        assert flat(plain).norm() > 1e-3
        assert relative_gap(plain, forward) < 1e-12


def test_forward_over_reverse_on_a_tiny_qwen2_with_tied_embeddings():
    """Qwen2 (grouped KV heads, q/k/v biases, tied embeddings) is the real model's family."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config).eval()
    _, params = select_parameters(model, FragilitySettings())
    for p in model.parameters():
        p.requires_grad_(any(p is q for q in params))
    batches = scored_batches(random_ids(6, 10, seed=2), [4] * 6, 0, 3, CPU)
    v = random_unit(params, seed=1)
    with torch.enable_grad():
        plain = hessian_vector_product(loss_terms(model, batches), params, v)
        forward = forward_over_reverse_product(subset_terms(model, batches, params), params, v)
    assert relative_gap(plain, forward) < 1e-5  # float32 rounding


def test_fragility_by_forward_over_reverse_gives_the_default_sharpness():
    model = float64_llama()
    inputs = tiny_inputs(model)
    base = FragilitySettings(power_iterations=6, steps=3, learning_rate=0.5, batch_size=3)
    old = fragility(model, inputs, base)
    new = fragility(model, inputs, base.model_copy(update={"hvp": "forward-over-reverse"}))
    assert (old.hvp, new.hvp) == ("double-backward", "forward-over-reverse")
    assert new.sharpness_history == pytest.approx(old.sharpness_history, rel=1e-9)
    assert new.curvature_coupling == pytest.approx(old.curvature_coupling, rel=1e-9)
    assert new.delta_loss == old.delta_loss  # the benign run does not use the HVPs


def test_relative_change_stops_once_the_estimate_settles():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    spectrum = torch.tensor([7.0, 6.0, 3.0] + [1.0] * 17, dtype=torch.float64)
    a = q @ torch.diag(spectrum) @ q.T
    params = [torch.zeros(20, dtype=torch.float64, requires_grad=True)]

    def run(stop):
        return power_iteration(
            lambda v: hessian_vector_product(quadratic(params, a), params, v),
            random_unit(params, seed=1),
            iterations=200,
            tolerance=1e-3,
            stop=stop,
        )

    residual, change = run("eigen-residual"), run("relative-change")
    assert residual.converged and change.converged
    h = change.history
    assert abs(h[-1] - h[-2]) <= 1e-3 * abs(h[-1])
    assert all(abs(y - x) > 1e-3 * abs(y) for x, y in zip(h[:-2], h[1:-1], strict=True))
    # the Rayleigh quotient settles long before the vector does (gap 6/7): fewer products,
    # and an estimate still within a few tolerances of λ_1
    assert len(h) < len(residual.history)
    assert change.eigenvalue == pytest.approx(7.0, rel=5e-3)


def test_relative_change_needs_two_estimates():
    params = [torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    a = torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
    result = power_iteration(
        lambda v: hessian_vector_product(quadratic(params, a), params, v),
        random_unit(params, seed=0),
        iterations=1,
        tolerance=1.0,
        stop="relative-change",
    )
    assert not result.converged and len(result.history) == 1


@pytest.mark.parametrize(
    ("selected", "window", "blocks"),
    [(5, 1, (3, 6)), (1, 2, (0, 3)), (8, 2, (5, 8)), (0, 0, (0, 1)), (4, 0, (3, 4))],
)
def test_blocks_around_l_star_are_those_writing_layers_within_the_window(selected, window, blocks):
    # block i writes layer i + 1; 8 blocks
    assert around_selected(selected, window, 8) == blocks


def test_selected_window_replaces_the_middle_third():
    model = make_llama(40, layers=6)
    settings = FragilitySettings(selected_window=1)
    subset, params = select_parameters(model, settings, selected=2)
    assert subset.endswith("blocks 0..2") and len(params) == 3
    assert params[0] is model.model.layers[0].mlp.down_proj.weight
    with pytest.raises(ValueError, match="selected layer"):
        select_parameters(model, settings)
