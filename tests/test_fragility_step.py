"""Known answers for the benign fine-tune's step size: auto η, its back-off, a set η."""

import math

import pytest
import torch

from depthcard.analysis.curvature import gradient, norm, power_iteration
from depthcard.analysis.fragility import fragility, loss_terms, scored_batches, select_parameters
from depthcard.analysis.fragility_law import MAX_BACKOFFS, choose_step_size, sgd_deltas
from depthcard.schemas.sections import Fragility, FragilitySettings
from tests.test_fragility import one_thread, tiny_inputs  # noqa: F401 (fixture)
from tests.tiny_models import make_llama

VOCAB = 40


def vec(*xs: float) -> list[torch.Tensor]:
    return [torch.tensor(xs, dtype=torch.float64)]


def test_auto_step_puts_the_predicted_first_move_at_the_target():
    # ⟨∇L_A, g_1⟩ = −0.02: a step of η raises L_A by 0.02 η to first order
    step = choose_step_size(vec(0.1, -0.2), vec(0.2, 0.2), 100.0, target=0.01, max_fraction=0.01)
    assert step.rule == "first-order"
    assert step.learning_rate == pytest.approx(0.5) and step.predicted() == pytest.approx(0.01)


def test_auto_step_falls_back_to_a_step_of_set_size_when_the_coupling_is_tiny():
    g1 = vec(3.0, 4.0)  # ‖g_1‖ = 5, ‖θ_S‖ = 10, fraction 0.01: η‖g_1‖ = 0.1 → η = 0.02
    step = choose_step_size(vec(4e-6, -3e-6), g1, 10.0, target=0.01, max_fraction=0.01)
    assert step.rule == "step-size" and step.learning_rate == pytest.approx(0.02)
    assert step.predicted() == pytest.approx(0.0)  # ⟨∇L_A, g_1⟩ = 0 exactly here
    orthogonal = choose_step_size(vec(0.0, 1.0), vec(2.0, 0.0), 10.0, 0.01, 0.01)
    assert orthogonal.rule == "step-size" and orthogonal.learning_rate == pytest.approx(0.05)
    nothing = choose_step_size(vec(1.0, 0.0), vec(0.0, 0.0), 10.0, 0.01, 0.01)
    assert nothing.rule == "zero" and nothing.learning_rate == 0.0


def quadratic_run(limit: float | None, eta: float, nan_above: float = math.inf):
    """θ = x ∈ R²; L_F = ⟨w, x⟩ (gradient w, ‖w‖ = 1) and L_A = ⟨u, x⟩ + ½k‖x‖², k = 0.1.

    With ⟨u, w⟩ = −1e-3 one step of η moves L_A by 1e-3·η + 0.05·η²: a first-order choice
    for a 0.01 target (η = 10) overshoots it 500-fold through the curvature.
    """
    w = torch.tensor([0.6, 0.8], dtype=torch.float64)
    u = torch.tensor([-1e-3, 0.0], dtype=torch.float64) / 0.6
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)

    def step_terms(t: int):
        return lambda: iter([w @ x])

    def evaluate() -> float:
        with torch.no_grad():
            if float(x.norm()) > nan_above:
                return math.nan
            return float(u @ x + 0.05 * (x @ x))

    run = sgd_deltas([x], step_terms, evaluate, 3, eta, first_move_limit=limit)
    assert float(x.detach().abs().sum()) == 0.0  # restored
    return run


def test_back_off_halves_eta_until_the_first_move_is_within_four_times_the_target():
    # η = 10 / 2^n moves L_A by 0.01/2^n + 5/4^n: 0.079 at n = 3, 0.020 at n = 4
    run = quadratic_run(limit=4 * 0.01, eta=10.0)
    assert run.backoffs == 4 and run.learning_rate == pytest.approx(10.0 / 16)
    assert run.deltas[0] == pytest.approx(0.01 / 16 + 5 / 256) and not run.overshoot
    eta = run.learning_rate  # every later step uses the η that passed
    assert run.deltas[1] == pytest.approx(1e-3 * 2 * eta + 0.05 * (2 * eta) ** 2)


def test_back_off_also_catches_a_loss_that_is_not_finite():
    run = quadratic_run(limit=1.0, eta=10.0, nan_above=3.0)  # NaN until η ≤ 2.5
    assert run.backoffs == 2 and run.learning_rate == 2.5 and math.isfinite(run.deltas[0])
    with pytest.raises(FloatingPointError, match="not finite"):
        quadratic_run(limit=1.0, eta=10.0, nan_above=-1.0)


def test_back_off_gives_up_after_the_last_halving_and_says_so():
    run = quadratic_run(limit=1e-12, eta=10.0)
    assert run.backoffs == MAX_BACKOFFS and run.overshoot
    assert run.learning_rate == pytest.approx(10.0 / 2**MAX_BACKOFFS)


def test_a_set_rate_runs_without_back_off():
    run = quadratic_run(limit=None, eta=10.0)
    assert run.backoffs == 0 and run.learning_rate == 10.0
    assert run.deltas[0] == pytest.approx(0.01 + 5.0)


def test_auto_eta_on_a_tiny_llama_predicts_the_target_and_moves_about_that_much():
    model = make_llama(VOCAB)
    inputs = tiny_inputs(model)
    target = 1e-3
    settings = FragilitySettings(
        power_iterations=3, steps=4, batch_size=3, target_first_step=target, max_step_fraction=1.0
    )
    section = fragility(model, inputs, settings)
    assert section.learning_rate_rule == "first-order" and section.learning_rate_backoffs == 0
    assert abs(section.predicted_first_step) == pytest.approx(target, rel=1e-9)
    assert section.target_first_step == target and section.max_step_fraction == 1.0
    # the realised first step: the first-order prediction holds to within its 4× back-off
    assert abs(section.delta_loss[0]) <= 4 * target
    assert section.delta_loss[0] == pytest.approx(section.predicted_first_step, rel=0.1)


def test_auto_eta_on_a_tiny_llama_falls_back_to_the_step_size_cap():
    model = make_llama(VOCAB)
    inputs = tiny_inputs(model)
    settings = FragilitySettings(
        power_iterations=2, steps=3, batch_size=3, target_first_step=10.0, max_step_fraction=1e-3
    )
    section = fragility(model, inputs, settings)
    _, params = select_parameters(model, settings)
    benign = scored_batches(inputs.benign_ids, [1] * 6, 0, 3, torch.device("cpu"))
    _, g1 = gradient(loss_terms(model, [benign[0]]), params)
    theta = norm([p.detach() for p in params])
    assert section.learning_rate_rule == "step-size"
    assert section.learning_rate * norm(g1) == pytest.approx(1e-3 * theta, rel=1e-6)


def test_a_set_rate_is_exactly_the_old_plain_sgd():
    """A numeric η runs θ ← θ − η ∇L_F on batch t mod B, as before auto η existed."""
    model = make_llama(VOCAB)
    inputs = tiny_inputs(model)
    settings = FragilitySettings(power_iterations=2, steps=5, learning_rate=0.5, batch_size=3)
    section = fragility(model, inputs, settings)
    assert section.learning_rate == 0.5 and section.learning_rate_rule == "set"
    assert section.learning_rate_backoffs == 0 and section.target_first_step is None

    _, params = select_parameters(model, settings)
    cpu = torch.device("cpu")
    align = scored_batches(inputs.refusal_ids, inputs.prompt_lengths, 0, 3, cpu)
    benign = scored_batches(inputs.benign_ids, [1] * len(inputs.benign_ids), 0, 3, cpu)
    saved = [p.detach().clone() for p in params]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.eval()

    def l_a() -> float:
        with torch.no_grad():
            return sum(float(t.double()) for t in loss_terms(model, align)())

    start, want = l_a(), []
    for t in range(5):
        _, grad = gradient(loss_terms(model, [benign[t % len(benign)]]), params)
        with torch.no_grad():
            for p, g in zip(params, grad, strict=True):
                p.sub_(g, alpha=0.5)
        want.append(l_a() - start)
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    # the same SGD run; L_A is evaluated in wider batches (fragility.EVAL_BATCH), which moves
    # its float32 sums by rounding only
    assert section.delta_loss == pytest.approx(want, rel=0, abs=1e-6)


def test_power_iteration_stops_on_its_tolerance_and_counts_what_it_used():
    model = make_llama(VOCAB)
    settings = FragilitySettings(power_iterations=40, tolerance=1e-2, steps=3, learning_rate=0.1)
    section = fragility(model, tiny_inputs(model), settings)
    assert section.sharpness_converged and section.power_iterations_used < 40
    assert section.power_iterations_used == len(section.sharpness_history)
    assert section.hessian_vector_products == section.power_iterations_used + 1  # + coupling
    capped = power_iteration(lambda v: [2.0 * v[0] + v[0][[1, 0]]], vec(1.0, 0.0), 3, 1e-9)
    assert not capped.converged and len(capped.history) == 3


def test_reports_and_configs_written_before_auto_eta_still_validate():
    old = FragilitySettings.model_validate({"learning_rate": 0.3, "steps": 10})
    assert old.learning_rate == 0.3
    section = {
        "parameter_subset": "/mlp/ in blocks 1..2",
        "power_iterations": 20,
        "alignment_loss": 0.1,
        "sharpness": 8.2,
        "steps": 10,
        "learning_rate": 0.3,
        "delta_loss": [0.001] * 10,
        "forecast_margin": 0.5,
    }
    loaded = Fragility.model_validate(section)
    assert loaded.learning_rate_rule is None and loaded.power_iterations_used is None
