"""The empirical law of the fragility forecast: benign SGD, its step size, and the t^p fit.

`sgd_deltas` runs plain SGD on the benign loss L_F over θ_S and records how the alignment
loss L_A rises, ΔL_A(t); `fit_power_law` fits ΔL_A ≈ c·t^p to it. The step size η is either
set, or chosen for the model by `choose_step_size`: one rate for every model (0.3, tuned on
the 345k-parameter organisms) moved L_A of a 0.5B instruct model by 0.26 nats in one step
and then not at all, which left the fit nothing to fit. See docs/fragility.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from depthcard.analysis.curvature import LossTerms, Vector, dot, gradient, norm
from depthcard.schemas.sections import LearningRateRule

OVERSHOOT = 4.0  # auto η backs off while the first step moves L_A by more than 4 × target
MAX_BACKOFFS = 10  # halvings of η at most (η / 1024)
_MAX_LOG_STEPS = math.log(1e300)


@dataclass(frozen=True)
class StepSize:
    learning_rate: float  # η
    rule: LearningRateRule  # how η was chosen
    slope: float  # ⟨∇L_A, g_1⟩: a first step at η changes L_A by −η·slope to first order

    def predicted(self, learning_rate: float | None = None) -> float:
        """The first step's first-order change of L_A at η (default: this η), nats/token."""
        return -(self.learning_rate if learning_rate is None else learning_rate) * self.slope


@dataclass(frozen=True)
class BenignRun:
    deltas: list[float]  # ΔL_A(t), t = 1..T
    learning_rate: float  # η of every step, after any back-off
    backoffs: int  # halvings of η the first step needed
    overshoot: bool  # the first step still moved L_A past the limit after the last back-off


@dataclass(frozen=True)
class PowerLawFit:
    exponent: float | None  # p in ΔL_A ≈ c·t^p
    coefficient: float | None  # c
    r2: float | None  # of the log-log fit; None when log ΔL_A is constant
    forecast_steps: float | None  # (margin / c)^(1/p)
    points: int  # steps with ΔL_A > 0 that were fitted
    reason: str | None  # why the forecast is None


# --- the step size -----------------------------------------------------------------------


def choose_step_size(
    grad_a: Vector, first_grad: Vector, theta_norm: float, target: float, max_fraction: float
) -> StepSize:
    """η for the benign fine-tune, chosen so that its first step moves L_A by `target`.

    To first order, the step θ ← θ − η g_1 changes L_A by −η⟨∇L_A, g_1⟩. The rule takes
    η = target / |⟨∇L_A, g_1⟩| ("first-order"), unless that step would move θ_S by more than
    `max_fraction`·‖θ_S‖ (the coupling is ~0); then the step has exactly that size
    ("step-size"). `sgd_deltas` checks the realised move and backs off.

    Args:
        grad_a: ∇L_A over θ_S.
        first_grad: g_1, the gradient of L_F on the first step's mini-batch.
        theta_norm: ‖θ_S‖.
        target: the first step's predicted |ΔL_A|, nats/token (> 0).
        max_fraction: the largest first step, as a fraction of ‖θ_S‖ (> 0).

    Returns:
        η, the rule that chose it, and the slope; `predicted()` is negative when a benign
        step lowers L_A. η = 0 ("zero") when g_1 = 0, or when neither rule
        applies (⟨∇L_A, g_1⟩ = 0 and θ_S = 0): no step can move anything then.
    """
    slope = dot(grad_a, first_grad)  # L_A(θ − η g_1) ≈ L_A(θ) − η·slope
    size = norm(first_grad)
    cap = max_fraction * theta_norm / size if size > 0.0 and theta_norm > 0.0 else math.inf
    if size > 0.0 and slope != 0.0 and target / abs(slope) <= cap:
        eta, rule = target / abs(slope), "first-order"
    elif math.isfinite(cap):
        eta, rule = cap, "step-size"
    else:
        eta, rule = 0.0, "zero"
    return StepSize(eta, rule, slope)


def set_step_size(learning_rate: float, grad_a: Vector, first_grad: Vector) -> StepSize:
    """A set η, with the slope that predicts its first step, for the record."""
    return StepSize(learning_rate, "set", dot(grad_a, first_grad))


# --- the empirical law -------------------------------------------------------------------


def _step(params: Sequence[nn.Parameter], grad: Vector, learning_rate: float) -> None:
    with torch.no_grad():
        for p, g in zip(params, grad, strict=True):
            p.sub_(g.to(p.dtype), alpha=learning_rate)


def _restore(params: Sequence[nn.Parameter], saved: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)


def _too_far(delta: float, limit: float | None) -> bool:
    return limit is not None and not (math.isfinite(delta) and abs(delta) <= limit)


def sgd_deltas(
    params: Sequence[nn.Parameter],
    step_terms: Callable[[int], LossTerms],
    evaluate: Callable[[], float],
    steps: int,
    learning_rate: float,
    *,
    first_grad: Vector | None = None,
    first_move_limit: float | None = None,
) -> BenignRun:
    """ΔL_A(t) = L_A(θ_t) − L_A(θ_0), t = 1..steps, under plain SGD θ ← θ − η ∇L_F.

    Args:
        params: the subset θ_S; only it moves. Restored bit for bit on exit, even on error.
        step_terms: `step_terms(t)` gives the L_F terms of step t (its mini-batch).
        evaluate: L_A at the current parameters.
        steps: T.
        learning_rate: η.
        first_grad: the gradient of `step_terms(0)` at θ_0, when the caller has it already.
        first_move_limit: when given, the first step is taken again from θ_0 at η/2 while
            |ΔL_A(1)| exceeds it or is not finite, at most `MAX_BACKOFFS` times; the later
            steps use the η that passed. None: η as given (a set rate).

    Returns:
        The T deltas, the η used, the back-offs and whether the last one still overshot.

    Raises:
        FloatingPointError: ΔL_A(1) is not finite after the last back-off.
    """
    saved = [p.detach().clone() for p in params]
    try:
        start, deltas, eta, backoffs = evaluate(), [], learning_rate, 0
        for t in range(steps):
            if t == 0 and first_grad is not None:
                grad = first_grad
            else:
                _, grad = gradient(step_terms(t), params)
            _step(params, grad, eta)
            deltas.append(evaluate() - start)
            while t == 0 and _too_far(deltas[0], first_move_limit) and backoffs < MAX_BACKOFFS:
                _restore(params, saved)
                eta, backoffs = eta / 2, backoffs + 1
                _step(params, grad, eta)
                deltas[0] = evaluate() - start
            if t == 0 and first_move_limit is not None and not math.isfinite(deltas[0]):
                raise FloatingPointError(f"L_A is not finite after one benign step at η = {eta}")
        return BenignRun(deltas, eta, backoffs, _too_far(deltas[0], first_move_limit))
    finally:
        _restore(params, saved)


def fit_power_law(
    delta: Sequence[float], margin: float, fit_steps: int | None = None
) -> PowerLawFit:
    """Least-squares fit of log ΔL_A = log c + p log t on the early steps where ΔL_A > 0.

    Args:
        delta: ΔL_A(t) for t = 1..T.
        margin: the rise in L_A the forecast t = (margin / c)^(1/p) is for (> 0).
        fit_steps: fit on t ≤ fit_steps only; None = all.

    Returns:
        p, c, R² and the forecast; the forecast is None with a reason when fewer than 3
        points are positive or p ≤ 0 (p, c, R² are still given from 3 points on).
    """
    early = list(delta)[: fit_steps or len(delta)]
    pts = [(math.log(t), math.log(d)) for t, d in enumerate(early, 1) if math.isfinite(d) and d > 0]
    if len(pts) < 3:
        reason = f"only {len(pts)} of {len(early)} steps have ΔL_A > 0 (a fit needs 3)"
        return PowerLawFit(None, None, None, None, len(pts), reason)
    x = torch.tensor([p[0] for p in pts], dtype=torch.float64)
    y = torch.tensor([p[1] for p in pts], dtype=torch.float64)
    xc, yc = x - x.mean(), y - y.mean()
    slope = float((xc * yc).sum() / (xc * xc).sum())
    intercept = float(y.mean()) - slope * float(x.mean())
    ss_tot, ss_res = float((yc * yc).sum()), float(((yc - slope * xc) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    if slope <= 0:
        reason = f"ΔL_A does not grow with t (p = {slope:.3g} ≤ 0)"
        return PowerLawFit(slope, math.exp(intercept), r2, None, len(pts), reason)
    log_steps = (math.log(margin) - intercept) / slope
    if log_steps > _MAX_LOG_STEPS:
        reason = "forecast beyond 1e300 steps"
        return PowerLawFit(slope, math.exp(intercept), r2, None, len(pts), reason)
    return PowerLawFit(slope, math.exp(intercept), r2, math.exp(log_steps), len(pts), None)
