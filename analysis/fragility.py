"""Fragility forecast: curvature of the alignment loss and its erosion by a benign fine-tune.

`L_A` is the mean next-token NLL (nats/token) of the child's own refusals, scored on the
response tokens only; `L_F` is the plain LM loss on benign capability text. Everything is
taken over a parameter subset θ_S (default: the MLP down-projections of the middle third of
the decoder blocks); the rest of the model is frozen while we compute, and every flag and
value is restored afterwards. Hessian-vector products come from double backprop or from
forward over reverse (`FragilitySettings.hvp`). A vector
over θ_S is a list of tensors, one per parameter, on that parameter's device; every dot
product and norm is taken in float64.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from depthcard.analysis.capture import pad_left
from depthcard.analysis.curvature import (
    Coupling,
    LossTerms,
    RetainedHessian,
    Sharpness,
    SubsetTerm,
    Vector,
    coupling,
    forward_over_reverse_product,
    gradient,
    hessian_vector_product,
    norm,
    power_iteration,
    random_unit,
    retained_graph_bytes,
)
from depthcard.analysis.fragility_law import (
    OVERSHOOT,
    BenignRun,
    ForecastChecks,
    PowerLawFit,
    StepSize,
    choose_step_size,
    fit_power_law,
    forecast_reasons,
    set_step_size,
    sgd_deltas,
)
from depthcard.analysis.fragility_subset import only_trainable, select_parameters
from depthcard.analysis.models import input_device
from depthcard.analysis.progress import purpose, task
from depthcard.schemas.sections import Fragility, FragilitySettings

log = logging.getLogger(__name__)

EVAL_BATCH = 16
"""Sequences per pass when L_A is only evaluated (before and after each benign step): no
graph is kept, so wider batches than the gradients' cost little memory and save calls."""


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


def _model_inputs(batch: ScoredBatch) -> dict:
    return {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
        "use_cache": False,
    }


def summed_nll(model: nn.Module, batch: ScoredBatch) -> torch.Tensor:
    """Σ over scored tokens of −log p(token | prefix): a scalar (float32 at least), with graph."""
    return _nll_of_logits(model(**_model_inputs(batch)).logits, batch)


def _nll_of_logits(logits: torch.Tensor, batch: ScoredBatch) -> torch.Tensor:
    logits = logits[:, :-1]  # (batch, seq - 1, vocab)
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


def subset_terms(
    model: nn.Module, batches: list[ScoredBatch], params: Sequence[nn.Parameter]
) -> list[SubsetTerm]:
    """`loss_terms` as pure functions of θ_S's values (`torch.func.functional_call`), one per
    batch, for `forward_over_reverse_product`."""
    names = {id(p): name for name, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    count = sum(b.tokens for b in batches)

    def term(batch: ScoredBatch) -> SubsetTerm:
        def value(theta: tuple[torch.Tensor, ...]) -> torch.Tensor:
            out = torch.func.functional_call(
                model, dict(zip(keys, theta, strict=True)), (), _model_inputs(batch)
            )
            return _nll_of_logits(out.logits, batch) / count

        return value

    return [term(b) for b in batches]


def mean_loss(model: nn.Module, batches: list[ScoredBatch]) -> float:
    """Mean NLL per scored token, no graph, summed in float64."""
    with torch.no_grad():
        return sum(float(t.double()) for t in loss_terms(model, batches)())


@dataclass(frozen=True)
class Curvature:
    loss: float  # L_A at θ_0
    grad: Vector  # ∇L_A
    sharpness: Sharpness
    coupling: Coupling
    hvps: int  # Hessian-vector products used


def _curvature(model, params, align, benign, settings: FragilitySettings) -> Curvature:
    align_terms = loss_terms(model, align)
    with purpose("gradient"):
        loss_a, grad_a = gradient(align_terms, params)
        _, grad_f = gradient(loss_terms(model, benign), params)
    calls = 0
    cap = settings.power_iterations + 1  # the power iteration's cap, then the coupling's HVP

    product = _product(model, params, align, settings)

    with purpose("hvp"), task("power iteration", total=cap, unit="HVP") as bar:

        def hvp(v: Vector) -> Vector:
            nonlocal calls
            calls += 1
            bar.advance()
            return product(v)

        start = random_unit(params, settings.seed)
        sharp = power_iteration(
            hvp, start, settings.power_iterations, settings.tolerance, settings.stop_rule
        )
        coupled = coupling(grad_a, grad_f, hvp)
    if isinstance(product, RetainedHessian):
        product.release()
    return Curvature(loss_a, grad_a, sharp, coupled, calls)


def _product(model, params, align, settings: FragilitySettings) -> Callable[[Vector], Vector]:
    """v ↦ H_A v by the chosen method; a `RetainedHessian` when its graphs fit the budget."""
    if settings.hvp == "forward-over-reverse":
        terms = subset_terms(model, align, params)
        return lambda v: forward_over_reverse_product(terms, params, v)
    align_terms = loss_terms(model, align)
    if _graphs_fit(model, align):
        return RetainedHessian(align_terms, params)
    return lambda v: hessian_vector_product(align_terms, params, v)


HALF_DTYPES = (torch.float16, torch.bfloat16)


def in_half_precision(params) -> bool:
    """Whether any parameter of θ_S is float16 or bfloat16."""
    return any(p.dtype in HALF_DTYPES for p in params)


HALF_PRECISION_REASON = (
    "the benign fine-tune ran in half precision, where its steps round away (load in float32)"
)

RETAIN_FLOOR_BYTES = 2 * 1024**3
"""Graphs up to this size are kept whatever the free memory: the bundled pair and 135M models
always retain, as they did under the earlier fixed budget."""

RETAIN_SHARE = 1 / 3
"""Share of the free memory the kept graphs may take: the second backward of each product
needs about as much again while it runs (`bench/stage_precision.py` on
Qwen2.5-Coder-0.5B-Instruct: graphs estimated at 8.0 GB took the process's peak from 7.9 GB,
rebuilding them, to 15.5 GB, keeping them)."""


def retain_budget(free_bytes: int | None) -> int:
    """Largest estimated graph kept for the HVPs, given the free memory where it would live."""
    if free_bytes is None:
        return RETAIN_FLOOR_BYTES
    return max(RETAIN_FLOOR_BYTES, int(RETAIN_SHARE * free_bytes))


def free_memory_bytes(model: nn.Module) -> int | None:
    """Free memory where the model's parameters live: the least over its CUDA devices, or
    the host's `MemAvailable` (Linux); None where it cannot be read."""
    devices = {p.device for p in model.parameters()}
    if all(d.type == "cuda" for d in devices):
        return min(int(torch.cuda.mem_get_info(d)[0]) for d in devices)
    if any(d.type != "cpu" for d in devices):
        return None  # mixed or other accelerators: keep to the floor
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _graphs_fit(model: nn.Module, batches: list[ScoredBatch]) -> bool:
    """Whether every L_A batch's double-backward graph fits `retain_budget` of the free memory."""
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", None)
    hidden = getattr(cfg, "hidden_size", None)
    layers = getattr(cfg, "num_hidden_layers", None)
    if not (vocab and hidden and layers):
        return False
    tokens = sum(int(b.input_ids.numel()) for b in batches)
    need = retained_graph_bytes(tokens, vocab, hidden, layers)
    if need <= RETAIN_FLOOR_BYTES:
        return True
    free = free_memory_bytes(model)
    fits = need <= retain_budget(free)
    log.info(
        "fragility: the HVP graphs (about %.2g GB) %s %s",
        need / 1e9,
        "are kept:" if fits else "are rebuilt for each product:",
        "free memory unknown" if free is None else f"{free / 1e9:.3g} GB free",
    )
    return fits


def _benign_run(model, params, align, benign, grad_a, settings) -> tuple[StepSize, BenignRun]:
    """The step size (set or auto) and the SGD run at it; auto backs off an overshoot.

    `align` here is L_A's batches for evaluation only (no graph), so they may be larger than
    the ones its gradient and HVPs use: L_A is a sum over batches, the same up to rounding.
    """

    def step_terms(t: int) -> LossTerms:
        return loss_terms(model, [benign[t % len(benign)]])

    _, first_grad = gradient(step_terms(0), params)
    if settings.learning_rate is not None:
        size, limit = set_step_size(settings.learning_rate, grad_a, first_grad), None
    else:
        theta = norm([p.detach() for p in params])
        target = settings.target_first_step
        size = choose_step_size(grad_a, first_grad, theta, target, settings.max_step_fraction)
        limit = OVERSHOOT * target
    with purpose("benign fine-tune"), task("benign fine-tune", settings.steps, "step") as bar:
        evaluations = 0

        def evaluate() -> float:
            nonlocal evaluations
            evaluations += 1
            if evaluations > 1:  # the first one is L_A before any step
                bar.advance()
            return mean_loss(model, align)

        run = sgd_deltas(
            params,
            step_terms,
            evaluate,
            settings.steps,
            size.learning_rate,
            first_grad=first_grad,
            first_move_limit=limit,
        )
    return size, run


def fragility(
    model: nn.Module,
    inputs: FragilityInputs,
    settings: FragilitySettings | None = None,
    layers_path: str | None = None,
    selected: int | None = None,
) -> Fragility:
    """The report's Fragility section: L_A, sharpness, coupling and the fitted erosion law.

    Args:
        model: the child, any transformers causal LM. Its parameters, `requires_grad` flags
            and train/eval mode are the same on return (the SGD run is undone).
        inputs: refusal and benign token ids.
        settings: cost controls; defaults to `FragilitySettings()`.
        layers_path: dotted path of the decoder blocks when it is not a known one.
        selected: l*, needed when `settings.selected_window` is set.

    Returns:
        A validated `schemas.sections.Fragility`.

    Raises:
        ValueError: empty inputs, an empty parameter subset, or `selected_window` without
            `selected`.
        FloatingPointError: a Hessian-vector product is not finite, or (auto η) L_A is not
            finite after the first benign step even at η / 2^10.
    """
    settings = settings or FragilitySettings()
    subset, params = select_parameters(model, settings, layers_path, selected)
    if in_half_precision(params):
        log.warning("θ_S is in half precision: small SGD updates round away; load in float32")
    device, bs = input_device(model), settings.batch_size
    align = scored_batches(inputs.refusal_ids, inputs.prompt_lengths, inputs.pad_id, bs, device)
    benign = scored_batches(
        inputs.benign_ids, [1] * len(inputs.benign_ids), inputs.pad_id, bs, device
    )
    with only_trainable(model, params):
        curv = _curvature(model, params, align, benign, settings)
        wide = scored_batches(
            inputs.refusal_ids, inputs.prompt_lengths, inputs.pad_id, max(bs, EVAL_BATCH), device
        )
        size, run = _benign_run(model, params, wide, benign, curv.grad, settings)
    fit = fit_power_law(run.deltas, settings.margin, settings.fit_steps)
    log.info(
        "fragility: L_A %.4g, λ %.4g (%d HVPs), η %.3g (%s), p %s",
        curv.loss, curv.sharpness.eigenvalue, curv.hvps, run.learning_rate, size.rule,
        fit.exponent,
    )  # fmt: skip
    return _section(settings, subset, params, align, curv, size, run, fit)


def _flags(curv: Curvature, run: BenignRun) -> list[str]:
    sharp = curv.sharpness
    flags = list(curv.coupling.flags)
    flags += ["zero-hessian"] if sharp.zero else []
    flags += ["not-converged"] if not sharp.converged else []
    flags += ["negative-dominant-eigenvalue"] if sharp.eigenvalue < 0 else []
    flags += ["first-step-overshoot"] if run.overshoot else []
    return flags


def _section(settings, subset, params, align, curv, size, run, fit: PowerLawFit) -> Fragility:
    auto = settings.learning_rate is None
    checks = ForecastChecks(
        settings.min_fit_r2, settings.min_rising_steps, settings.max_extrapolation
    )
    reasons = forecast_reasons(fit, curv.sharpness.converged, checks)
    if in_half_precision(params):
        reasons.append(HALF_PRECISION_REASON)
    return Fragility(
        parameter_subset=subset,
        parameter_count=sum(p.numel() for p in params),
        power_iterations=settings.power_iterations,
        power_iterations_used=len(curv.sharpness.history),
        hessian_vector_products=curv.hvps,
        tolerance=settings.tolerance,
        stop_rule=settings.stop_rule,
        hvp=settings.hvp,
        seed=settings.seed,
        batch_size=settings.batch_size,
        alignment_tokens=sum(b.tokens for b in align),
        alignment_loss=curv.loss,
        sharpness=curv.sharpness.eigenvalue,
        sharpness_history=curv.sharpness.history,
        sharpness_converged=curv.sharpness.converged,
        gradient_cosine=curv.coupling.cosine,
        curvature_coupling=curv.coupling.curvature,
        steps=settings.steps,
        learning_rate=run.learning_rate,
        learning_rate_rule=size.rule,
        target_first_step=settings.target_first_step if auto else None,
        max_step_fraction=settings.max_step_fraction if auto else None,
        learning_rate_backoffs=run.backoffs,
        predicted_first_step=size.predicted(run.learning_rate),
        delta_loss=run.deltas,
        fit_steps=settings.fit_steps,
        exponent=fit.exponent,
        fit_coefficient=fit.coefficient,
        fit_points=fit.points,
        fit_negative_points=fit.negative,
        fit_r2=fit.r2,
        forecast_steps=None if reasons else fit.forecast_steps,
        forecast_margin=settings.margin,
        forecast_checked=True,
        no_forecast_reasons=reasons,
        no_fit_reason=fit.reason,
        flags=_flags(curv, run),
    )
