"""Known answers for the fragility forecast: HVPs, power iteration, the t^p fit, edge cases."""

import math

import pytest
import torch

from depthcard.analysis.curvature import (
    coupling,
    gradient,
    hessian_vector_product,
    power_iteration,
    random_unit,
)
from depthcard.analysis.fragility import (
    FragilityInputs,
    FragilitySettings,
    fragility,
    loss_terms,
    mean_loss,
    scored_batches,
    select_parameters,
)
from depthcard.analysis.fragility_law import fit_power_law
from depthcard.schemas.sections import Fragility
from tests.tiny_models import make_llama

VOCAB = 40
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster, and on a busy 2-core box 20× faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_ids(n: int, length: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(5, VOCAB, (length + i % 3,), generator=gen).tolist() for i in range(n)]


def quadratic(params, a: torch.Tensor):
    """Loss terms of ½ xᵀAx with x the concatenation of `params`."""

    def terms():
        x = torch.cat([p.flatten() for p in params])
        yield 0.5 * x @ a @ x

    return terms


def test_mean_loss_scores_only_the_response_tokens():
    model = make_llama(VOCAB).double()
    ids, starts = random_ids(3, 7, seed=1), [4, 5, 6]
    batches = scored_batches(ids, starts, pad_id=0, batch_size=2, device=CPU)
    nll, count = 0.0, 0
    for seq, start in zip(ids, starts, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq])).logits[0], -1)
        nll -= sum(float(logp[j - 1, seq[j]]) for j in range(start, len(seq)))
        count += len(seq) - start
    assert sum(b.tokens for b in batches) == count
    assert mean_loss(model, batches) == pytest.approx(nll / count, rel=1e-9)


class Float64RMSNorm(torch.nn.Module):
    """LlamaRMSNorm without its float32 upcast, so a float64 model is float64 throughout."""

    def __init__(self, norm):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.variance_epsilon

    def forward(self, h):
        return self.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)


def float64_llama():
    model = make_llama(VOCAB).double()
    model.model.norm = Float64RMSNorm(model.model.norm)
    for layer in model.model.layers:
        layer.input_layernorm = Float64RMSNorm(layer.input_layernorm)
        layer.post_attention_layernorm = Float64RMSNorm(layer.post_attention_layernorm)
    return model


def _trainable_subset():
    """A float64 tiny llama with only θ_S trainable, and four scored sequences for L_A."""
    model = float64_llama()
    _, params = select_parameters(model, FragilitySettings())
    batches = scored_batches(random_ids(4, 8, seed=2), [3] * 4, 0, 2, CPU)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return model, params, batches


def test_hessian_vector_product_matches_finite_differences():
    model, params, batches = _trainable_subset()
    terms, v = loss_terms(model, batches), random_unit(params, seed=3)
    hv = hessian_vector_product(terms, params, v)
    eps, grads = 1e-4, []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, x in zip(params, v, strict=True):
                p.add_(x, alpha=sign * eps)
        grads.append(gradient(terms, params)[1])
        with torch.no_grad():
            for p, x in zip(params, v, strict=True):
                p.sub_(x, alpha=sign * eps)
    fd = torch.cat([((a - b) / (2 * eps)).flatten() for a, b in zip(*grads, strict=True)])
    exact = torch.cat([x.flatten() for x in hv])
    assert exact.norm() > 1e-3
    assert (exact - fd).norm() / exact.norm() < 1e-8


def test_power_iteration_recovers_the_top_eigenvalue_of_a_quadratic():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    spectrum = torch.tensor([7.0, 5.0, 3.0] + [1.0] * 12 + [-0.5] * 5, dtype=torch.float64)
    a = q @ torch.diag(spectrum) @ q.T
    params = [torch.zeros(12, dtype=torch.float64, requires_grad=True)]
    params.append(torch.zeros(2, 4, dtype=torch.float64, requires_grad=True))
    result = power_iteration(
        lambda v: hessian_vector_product(quadratic(params, a), params, v),
        random_unit(params, seed=1),
        iterations=200,
        tolerance=1e-6,
    )
    assert result.converged and not result.zero
    assert result.eigenvalue == pytest.approx(7.0, rel=1e-3)
    assert result.history[-1] == result.eigenvalue


@pytest.mark.parametrize(("p", "tol"), [(4.0, 0.3), (2.0, 0.2)])
def test_fit_recovers_the_exponent_from_noisy_power_law(p, tol):
    # additive noise, as mini-batches give it (5 % of the last step's rise)
    gen = torch.Generator().manual_seed(int(p))
    t = torch.arange(1, 21, dtype=torch.float64)
    clean = 1e-4 * t**p
    delta = clean + 0.05 * clean[-1] * torch.randn(20, generator=gen, dtype=torch.float64)
    fit = fit_power_law(delta.tolist(), margin=1.0)
    assert abs(fit.exponent - p) < tol
    assert fit.r2 > 0.9 and fit.points + fit.negative == 20 and fit.reason is None
    assert fit.forecast_steps == pytest.approx((1.0 / fit.coefficient) ** (1 / fit.exponent))


def test_fit_is_exact_on_clean_data_and_uses_only_early_steps():
    delta = [0.01 * t**4 for t in range(1, 11)] + [-1.0] * 5
    fit = fit_power_law(delta, margin=0.5, fit_steps=10)
    assert fit.exponent == pytest.approx(4.0) and fit.coefficient == pytest.approx(0.01)
    assert fit.r2 == pytest.approx(1.0) and fit.points == 10
    assert fit.forecast_steps == pytest.approx(50.0**0.25)


@pytest.mark.parametrize(
    ("delta", "reason"),
    [
        ([0.0] * 8, "does not rise"),
        ([-0.1 * t for t in range(8)], "does not rise"),
        ([0.5, 0.2, 0.1, 0.05], "does not grow"),
        ([1e-3, float("nan")], "only 1 of 2"),
    ],
)
def test_fit_reports_none_with_a_reason_for_flat_or_falling_data(delta, reason):
    fit = fit_power_law(delta, margin=0.5)
    assert fit.forecast_steps is None and reason in fit.reason


def test_zero_gradient_and_zero_hessian_give_finite_flagged_zeros():
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    other = torch.ones(3, dtype=torch.float64, requires_grad=True)

    def unrelated():
        yield (other**2).sum()

    loss, grad = gradient(unrelated, [x])
    result = power_iteration(
        lambda v: hessian_vector_product(unrelated, [x], v), random_unit([x], 0), 10, 1e-6
    )
    assert loss == 3.0 and float(grad[0].abs().sum()) == 0.0
    assert result.eigenvalue == 0.0 and result.zero and result.history == [0.0]
    linear = coupling(grad, [torch.ones(5, dtype=torch.float64)], lambda v: [v[0] * 0])
    assert linear.cosine is None and linear.curvature == 0.0
    assert linear.flags == ["zero-alignment-gradient"]
    assert coupling(grad, grad, lambda v: v).flags[-1] == "zero-finetune-gradient"


def tiny_inputs(model) -> FragilityInputs:
    prompts = random_ids(6, 5, seed=4)
    refusals, lengths = [], []
    for ids in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
        refusals.append(out[0].tolist())
        lengths.append(len(ids))
    return FragilityInputs(refusals, lengths, random_ids(6, 10, seed=5), pad_id=0)


def test_fragility_on_a_tiny_llama_is_valid_and_leaves_the_model_unchanged():
    model = make_llama(VOCAB)
    model.model.embed_tokens.weight.requires_grad_(False)
    model.train()
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    settings = FragilitySettings(power_iterations=8, steps=6, learning_rate=0.5, batch_size=3)
    section = fragility(model, tiny_inputs(model), settings)
    assert Fragility.model_validate(section.model_dump()) == section
    assert len(section.delta_loss) == 6 and section.parameter_count == 2 * 32 * 64
    assert 1 <= len(section.sharpness_history) <= 8 and section.alignment_loss > 0
    assert all(math.isfinite(x) for x in [*section.delta_loss, section.sharpness])
    assert section.gradient_cosine is not None and section.curvature_coupling is not None
    assert model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name][0]) and p.requires_grad == before[name][1], name


def test_fragility_of_an_unreached_subset_is_zero_and_flagged():
    model = make_llama(VOCAB)
    handle = model.model.layers[1].mlp.register_forward_hook(
        lambda m, a, out: torch.zeros_like(out)
    )
    try:
        settings = FragilitySettings(layer_range=(1, 2), power_iterations=3, steps=3)
        section = fragility(model, tiny_inputs(model), settings)
    finally:
        handle.remove()
    assert section.sharpness == 0.0 and section.gradient_cosine is None
    assert section.curvature_coupling is None
    assert {"zero-alignment-gradient", "zero-finetune-gradient", "zero-hessian"} <= set(
        section.flags
    )
    assert section.delta_loss == [0.0] * 3 and section.exponent is None
    assert "does not rise" in section.no_fit_reason


def test_parameter_subset_defaults_to_middle_third_down_projections():
    model = make_llama(VOCAB, layers=6)
    subset, params = select_parameters(model, FragilitySettings())
    assert subset.endswith("blocks 2..3") and len(params) == 2
    assert params[0] is model.model.layers[2].mlp.down_proj.weight
    with pytest.raises(ValueError, match="parameter_pattern"):
        select_parameters(model, FragilitySettings(parameter_pattern="nothing"))
    with pytest.raises(ValueError, match="outside"):
        select_parameters(model, FragilitySettings(layer_range=(4, 9)))


def test_retained_hessian_gives_the_plain_products_call_after_call():
    from depthcard.analysis.curvature import RetainedHessian, retained_graph_bytes

    model, params, batches = _trainable_subset()
    terms = loss_terms(model, batches)
    retained = RetainedHessian(terms, params)
    for seed in (3, 4, 5):  # the graph built on the first call serves the later ones
        v = random_unit(params, seed=seed)
        for a, b in zip(retained(v), hessian_vector_product(terms, params, v), strict=True):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    retained.release()
    assert retained.grads is None
    # SmolLM2-135M's shape, 511 scored tokens: about 1.7 GB kept, under the 2 GiB budget
    assert 1.5e9 < retained_graph_bytes(511, 49152, 576, 30) < 2 * 1024**3


def test_the_retain_budget_is_a_share_of_free_memory_above_a_floor(monkeypatch):
    import types

    import depthcard.analysis.fragility as frag

    gib = 1024**3
    assert frag.retain_budget(None) == frag.RETAIN_FLOOR_BYTES == 2 * gib
    assert frag.retain_budget(3 * gib) == 2 * gib  # a small box keeps the old floor
    assert frag.retain_budget(21 * gib) == 7 * gib  # a third of what is free
    free = frag.free_memory_bytes(make_llama(VOCAB))
    assert free is None or free > 0  # the host's MemAvailable where /proc/meminfo exists

    # Qwen2.5-0.5B's shape, 896 padded tokens (its 12 real refusals): about 4.7 GB of graphs
    qwen = types.SimpleNamespace(
        config=types.SimpleNamespace(vocab_size=151936, hidden_size=896, num_hidden_layers=24)
    )
    batch = types.SimpleNamespace(input_ids=torch.zeros(896, 1))
    monkeypatch.setattr(frag, "free_memory_bytes", lambda model: 20 * gib)
    assert frag._graphs_fit(qwen, [batch])
    monkeypatch.setattr(frag, "free_memory_bytes", lambda model: 12 * gib)
    assert not frag._graphs_fit(qwen, [batch])
    monkeypatch.setattr(frag, "free_memory_bytes", lambda model: None)
    assert not frag._graphs_fit(qwen, [batch])
