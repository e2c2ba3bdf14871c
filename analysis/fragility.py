"""Fragility forecast: curvature of the alignment loss and its erosion by a benign fine-tune.

`L_A` is the mean next-token NLL (nats/token) of the child's own refusals, scored on the
response tokens only; `L_F` is the plain LM loss on benign capability text. Everything is
taken over a parameter subset θ_S (default: the MLP down-projections of the middle third of
the decoder blocks); the rest of the model is frozen while we compute, and every flag and
value is restored afterwards. Hessian-vector products come from double backprop. A vector
over θ_S is a list of tensors, one per parameter, on that parameter's device; every dot
product and norm is taken in float64.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from depthcard.analysis.capture import pad_left
from depthcard.analysis.curvature import (
    Coupling,
    LossTerms,
    Sharpness,
    Vector,
    coupling,
    gradient,
    hessian_vector_product,
    power_iteration,
    random_unit,
)
from depthcard.analysis.models import decoder_layers, input_device
from depthcard.schemas.sections import Fragility, FragilitySettings

log = logging.getLogger(__name__)

_MAX_LOG_STEPS = math.log(1e300)


@dataclass(frozen=True)
class FragilityInputs:
    """Token ids for L_A and L_F; the caller generates the refusals greedily."""

    refusal_ids: list[list[int]]  # prompt + the child's own response, one per harmful prompt
    prompt_lengths: list[int]  # prompt tokens in each; L_A scores only the tokens after them
    benign_ids: list[list[int]]  # capability passages; L_F scores every token after the first
    pad_id: int


@dataclass(frozen=True)
class ScoredBatch:
    """A left-padded batch and the next-token targets that count (-100 elsewhere)."""

    input_ids: torch.Tensor  # (batch, seq)
    attention_mask: torch.Tensor  # (batch, seq)
    position_ids: torch.Tensor  # (batch, seq)
    targets: torch.Tensor  # (batch, seq - 1): token at position j + 1, or -100

    @property
    def tokens(self) -> int:
        return int((self.targets != -100).sum())


@dataclass(frozen=True)
class PowerLawFit:
    exponent: float | None  # p in ΔL_A ≈ c·t^p
    coefficient: float | None  # c
    r2: float | None  # of the log-log fit; None when log ΔL_A is constant
    forecast_steps: float | None  # (margin / c)^(1/p)
    points: int  # steps with ΔL_A > 0 that were fitted
    reason: str | None  # why the forecast is None


# --- the empirical law -------------------------------------------------------------------


def sgd_deltas(
    params: Sequence[nn.Parameter],
    step_terms: Callable[[int], LossTerms],
    evaluate: Callable[[], float],
    steps: int,
    learning_rate: float,
) -> list[float]:
    """ΔL_A(t) = L_A(θ_t) − L_A(θ_0), t = 1..steps, under plain SGD θ ← θ − η ∇L_F.

    Args:
        params: the subset θ_S; only it moves. Restored bit for bit on exit, even on error.
        step_terms: `step_terms(t)` gives the L_F terms of step t (its mini-batch).
        evaluate: L_A at the current parameters.
        steps: T.
        learning_rate: η.

    Returns:
        T floats.
    """
    saved = [p.detach().clone() for p in params]
    try:
        start, deltas = evaluate(), []
        for t in range(steps):
            _, grad = gradient(step_terms(t), params)
            with torch.no_grad():
                for p, g in zip(params, grad, strict=True):
                    p.sub_(g.to(p.dtype), alpha=learning_rate)
            deltas.append(evaluate() - start)
        return deltas
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


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


# --- the model side ----------------------------------------------------------------------


def scored_batches(
    ids: list[list[int]],
    scored_from: list[int],
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> list[ScoredBatch]:
    """Left-padded batches (sorted by length) whose targets are the tokens at j ≥ scored_from.

    Raises:
        ValueError: no sequences, lengths that do not pair up, or no token left to score.
    """
    if not ids:
        raise ValueError("no sequences to score")
    if len(scored_from) != len(ids):
        raise ValueError(f"{len(ids)} sequences but {len(scored_from)} prompt lengths")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        x, mask, pos = pad_left([ids[i] for i in chunk], pad_id, device)  # (batch, seq)
        width = x.shape[1]
        keep = torch.zeros_like(mask, dtype=torch.bool)
        for row, i in enumerate(chunk):
            keep[row, width - len(ids[i]) + max(scored_from[i], 1) :] = True
        targets = torch.where(keep, x, torch.full_like(x, -100))[:, 1:]  # (batch, seq - 1)
        batches.append(ScoredBatch(x, mask, pos, targets))
    if not sum(b.tokens for b in batches):
        raise ValueError("no tokens to score (every response is empty)")
    return batches


def summed_nll(model: nn.Module, batch: ScoredBatch) -> torch.Tensor:
    """Σ over scored tokens of −log p(token | prefix): a scalar (float32 at least), with graph."""
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    ).logits[:, :-1]  # (batch, seq - 1, vocab)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(
        logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100, reduction="sum"
    )


def loss_terms(model: nn.Module, batches: list[ScoredBatch]) -> LossTerms:
    """Terms Σ NLL_b / N whose sum is the mean NLL per scored token over all `batches`."""
    count = sum(b.tokens for b in batches)

    def terms() -> Iterator[torch.Tensor]:
        for batch in batches:
            yield summed_nll(model, batch) / count

    return terms


def mean_loss(model: nn.Module, batches: list[ScoredBatch]) -> float:
    """Mean NLL per scored token, no graph, summed in float64."""
    with torch.no_grad():
        return sum(float(t.double()) for t in loss_terms(model, batches)())


def middle_third(num_layers: int) -> tuple[int, int]:
    """Blocks [L//3, ⌈2L/3⌉): where refusal directions are usually read and written."""
    start = num_layers // 3
    return start, max(start + 1, -(-2 * num_layers // 3))


def select_parameters(
    model: nn.Module, settings: FragilitySettings, layers_path: str | None = None
) -> tuple[str, list[nn.Parameter]]:
    """θ_S: parameters in the chosen decoder blocks whose names match the pattern.

    Returns:
        (description for the report, parameters in `named_parameters` order).

    Raises:
        ValueError: the layer range is out of bounds or nothing matches; the message says
            which setting to change.
    """
    layers = decoder_layers(model, layers_path)
    start, stop = settings.layer_range or middle_third(len(layers))
    if not 0 <= start < stop <= len(layers):
        raise ValueError(f"layer_range ({start}, {stop}) outside the model's {len(layers)} blocks")
    inside = {id(p) for i in range(start, stop) for p in layers[i].parameters()}
    pattern = re.compile(settings.parameter_pattern)
    params = [p for name, p in model.named_parameters() if id(p) in inside and pattern.search(name)]
    if not params:
        raise ValueError(
            f"no parameter in blocks {start}..{stop - 1} matches {settings.parameter_pattern!r};"
            " set parameter_pattern to a regex over model.named_parameters() names"
        )
    return f"/{settings.parameter_pattern}/ in blocks {start}..{stop - 1}", params


@contextmanager
def only_trainable(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Inside: eval mode, grad enabled, `params` require grad and nothing else does.

    Flags and mode are restored on exit, even on error.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _curvature(model, params, align, benign, settings) -> tuple[float, Sharpness, Coupling]:
    align_terms = loss_terms(model, align)
    loss_a, grad_a = gradient(align_terms, params)
    _, grad_f = gradient(loss_terms(model, benign), params)

    def hvp(v: Vector) -> Vector:
        return hessian_vector_product(align_terms, params, v)

    start = random_unit(params, settings.seed)
    sharp = power_iteration(hvp, start, settings.power_iterations, settings.tolerance)
    return loss_a, sharp, coupling(grad_a, grad_f, hvp)


def fragility(
    model: nn.Module,
    inputs: FragilityInputs,
    settings: FragilitySettings | None = None,
    layers_path: str | None = None,
) -> Fragility:
    """The report's Fragility section: L_A, sharpness, coupling and the fitted erosion law.

    Args:
        model: the child, any transformers causal LM. Its parameters, `requires_grad` flags
            and train/eval mode are the same on return (the SGD run is undone).
        inputs: refusal and benign token ids.
        settings: cost controls; defaults to `FragilitySettings()`.
        layers_path: dotted path of the decoder blocks when it is not a known one.

    Returns:
        A validated `schemas.sections.Fragility`.

    Raises:
        ValueError: empty inputs or an empty parameter subset.
        FloatingPointError: a Hessian-vector product is not finite.
    """
    settings = settings or FragilitySettings()
    subset, params = select_parameters(model, settings, layers_path)
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in params):
        log.warning("θ_S is in half precision: small SGD updates round away; load in float32")
    device, bs = input_device(model), settings.batch_size
    align = scored_batches(inputs.refusal_ids, inputs.prompt_lengths, inputs.pad_id, bs, device)
    benign = scored_batches(
        inputs.benign_ids, [1] * len(inputs.benign_ids), inputs.pad_id, bs, device
    )
    with only_trainable(model, params):
        loss_a, sharp, coupled = _curvature(model, params, align, benign, settings)
        deltas = sgd_deltas(
            params,
            lambda t: loss_terms(model, [benign[t % len(benign)]]),
            lambda: mean_loss(model, align),
            settings.steps,
            settings.learning_rate,
        )
    fit = fit_power_law(deltas, settings.margin, settings.fit_steps)
    log.info("fragility: L_A %.4g, λ %.4g, p %s", loss_a, sharp.eigenvalue, fit.exponent)
    return _section(settings, subset, params, align, loss_a, sharp, coupled, deltas, fit)


def _section(settings, subset, params, align, loss_a, sharp, coupled, deltas, fit) -> Fragility:
    flags = list(coupled.flags)
    flags += ["zero-hessian"] if sharp.zero else []
    flags += ["not-converged"] if not sharp.converged else []
    flags += ["negative-dominant-eigenvalue"] if sharp.eigenvalue < 0 else []
    return Fragility(
        parameter_subset=subset,
        parameter_count=sum(p.numel() for p in params),
        power_iterations=settings.power_iterations,
        tolerance=settings.tolerance,
        seed=settings.seed,
        batch_size=settings.batch_size,
        alignment_tokens=sum(b.tokens for b in align),
        alignment_loss=loss_a,
        sharpness=sharp.eigenvalue,
        sharpness_history=sharp.history,
        sharpness_converged=sharp.converged,
        gradient_cosine=coupled.cosine,
        curvature_coupling=coupled.curvature,
        steps=settings.steps,
        learning_rate=settings.learning_rate,
        delta_loss=deltas,
        fit_steps=settings.fit_steps,
        exponent=fit.exponent,
        fit_coefficient=fit.coefficient,
        fit_points=fit.points,
        fit_r2=fit.r2,
        forecast_steps=fit.forecast_steps,
        forecast_margin=settings.margin,
        no_fit_reason=fit.reason,
        flags=flags,
    )
