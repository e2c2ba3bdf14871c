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
from dataclasses import dataclass, replace

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
    r2: float | None  # in ΔL_A units over every fitted step; None when ΔL_A is constant
    forecast_steps: float | None  # (margin / c)^(1/p), before the checks
    points: int  # fitted steps with ΔL_A > 0
    negative: int  # fitted steps with ΔL_A < 0 (fitted too: they lower R²)
    steps: int  # steps in the fit window
    reason: str | None  # why there is no fit or no forecast


@dataclass(frozen=True)
class ForecastChecks:
    """What a fit must pass before its forecast is printed (`FragilitySettings` holds them)."""

    min_r2: float
    min_rising_steps: int
    max_extrapolation: float  # forecast ≤ this × the steps observed


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


P_RANGE = (-4.0, 12.0)  # exponents searched; the fit's p is clipped to this range
_GRID = 161  # grid points over P_RANGE before the golden-section refinement


def _profile(u: list[float], d: list[float], p: float) -> tuple[float, float]:
    """(c', SSE) of the least-squares c'·u^p to d at a fixed p (c' ≥ 0)."""
    up = [x**p for x in u]
    c = max(0.0, sum(a * b for a, b in zip(up, d, strict=True)) / sum(a * a for a in up))
    return c, sum((y - c * a) ** 2 for a, y in zip(up, d, strict=True))


def _best_exponent(u: list[float], d: list[float]) -> float:
    """The p of P_RANGE with the smallest SSE: a grid, then golden section around its best."""
    lo, hi = P_RANGE
    grid = [lo + (hi - lo) * i / (_GRID - 1) for i in range(_GRID)]
    best = min(range(_GRID), key=lambda i: _profile(u, d, grid[i])[1])
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, _GRID - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
        if _profile(u, d, x1)[1] <= _profile(u, d, x2)[1]:
            b = x2
        else:
            a = x1
    return (a + b) / 2.0


def fit_power_law(
    delta: Sequence[float], margin: float, fit_steps: int | None = None
) -> PowerLawFit:
    """Least-squares fit of ΔL_A ≈ c·t^p, in ΔL_A units, to every early step.

    Steps where L_A fell (ΔL_A < 0) are fitted like the others: the curve c·t^p (c ≥ 0) cannot
    follow them, so they raise the residual and lower R². Nothing is dropped; `negative`
    counts them.

    Args:
        delta: ΔL_A(t) for t = 1..T.
        margin: the rise in L_A the forecast t = (margin / c)^(1/p) is for (> 0).
        fit_steps: fit on t ≤ fit_steps only; None = all.

    Returns:
        p, c, R² and the forecast; p, c and the forecast are None with a reason when fewer
        than 3 steps are finite or no c > 0 fits; the forecast is None with a reason when
        p ≤ 0. Whether the forecast is reliable is `forecast_reasons`' question.
    """
    early = list(delta)[: fit_steps or len(delta)]
    pts = [(float(t), float(d)) for t, d in enumerate(early, 1) if math.isfinite(d)]
    rising = sum(d > 0 for _, d in pts)
    falling = sum(d < 0 for _, d in pts)

    def none(reason: str) -> PowerLawFit:
        return PowerLawFit(None, None, None, None, rising, falling, len(early), reason)

    if len(pts) < 3:
        return none(f"only {len(pts)} of {len(early)} steps have a finite ΔL_A (a fit needs 3)")
    top = pts[-1][0]
    u, d = [t / top for t, _ in pts], [y for _, y in pts]  # t / T keeps u^p finite
    p = _best_exponent(u, d)
    scaled, sse = _profile(u, d, p)
    if scaled <= 0.0:
        return none(f"ΔL_A does not rise: no c > 0 fits ({falling} of {len(pts)} steps fell)")
    mean = sum(d) / len(d)
    ss_tot = sum((y - mean) ** 2 for y in d)
    r2 = 1.0 - sse / ss_tot if ss_tot > 0 else None
    log_c = math.log(scaled) - p * math.log(top)
    fit = PowerLawFit(p, math.exp(log_c), r2, None, rising, falling, len(early), None)
    if p <= 0:
        return replace(fit, reason=f"ΔL_A does not grow with t (p = {p:.3g} ≤ 0)")
    log_steps = (math.log(margin) - log_c) / p
    if log_steps > _MAX_LOG_STEPS:
        return replace(fit, reason="forecast beyond 1e300 steps")
    return replace(fit, forecast_steps=math.exp(log_steps))


def forecast_reasons(
    fit: PowerLawFit, sharpness_converged: bool | None, checks: ForecastChecks
) -> list[str]:
    """Why `fit`'s forecast is not reliable; empty when it passes every check.

    The checks: a forecast exists; R² ≥ `min_r2`; at least `min_rising_steps` fitted steps
    with ΔL_A > 0; the forecast within `max_extrapolation` × the fitted steps; the power
    iteration converged (its eigen-residual met the tolerance before the cap).
    """
    reasons = [] if fit.reason is None else [fit.reason]
    if fit.r2 is not None and fit.r2 < checks.min_r2:
        reasons.append(
            f"R² {fit.r2:.2f} < {checks.min_r2:g} (all {fit.steps} steps fitted, "
            f"{fit.negative} with ΔL_A < 0)"
        )
    if fit.points < checks.min_rising_steps:
        reasons.append(
            f"only {fit.points} of {fit.steps} steps have ΔL_A > 0 "
            f"(at least {checks.min_rising_steps} needed)"
        )
    horizon = checks.max_extrapolation * fit.steps
    if fit.forecast_steps is not None and fit.forecast_steps > horizon:
        reasons.append(
            f"forecast {fit.forecast_steps:.3g} steps is beyond "
            f"{checks.max_extrapolation:g} × the {fit.steps} steps observed"
        )
    if sharpness_converged is not True:
        reasons.append("sharpness not converged (power iteration stopped at its cap)")
    return reasons
