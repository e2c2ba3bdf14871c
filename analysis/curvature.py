"""Curvature maths over a parameter subset: vectors, gradients, Hessian-vector products.

A vector over the subset θ_S is a list of tensors, one per parameter, on that parameter's
device; every dot product and norm is taken in float64. Hessian-vector products come from
double backprop (reverse over reverse) or from a forward-mode derivative of the gradient
(forward over reverse, `torch.func`), which keeps no graph between products. Used by the
fragility forecast (`analysis.fragility`) and the erosion stage's gradient cosines
(`analysis.erosion_stage`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from depthcard.schemas.sections import StopRule

Vector = list[torch.Tensor]  # one tensor per subset parameter: same shape and device
LossTerms = Callable[[], Iterable[torch.Tensor]]  # yields scalar terms that sum to a loss
# one per batch: θ_S's values (in `params` order) ↦ that batch's scalar term, with no side effect
SubsetTerm = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]


@dataclass(frozen=True)
class Sharpness:
    eigenvalue: float  # Rayleigh quotient of the last iterate; 0.0 when H v = 0
    history: list[float]  # estimate after each step
    converged: bool
    zero: bool  # the Hessian mapped an iterate to exactly 0


@dataclass(frozen=True)
class Coupling:
    cosine: float | None  # cos(∇L_A, g_F); None when either is 0
    curvature: float | None  # g_Fᵀ H_A g_F / ‖g_F‖²; None when g_F = 0
    flags: list[str]


# --- vectors over θ_S -------------------------------------------------------------------


def dot(a: Vector, b: Vector) -> float:
    """Σ_i ⟨a_i, b_i⟩ accumulated in float64."""
    return sum(
        float(torch.dot(x.flatten().double(), y.flatten().double()))
        for x, y in zip(a, b, strict=True)
    )


def norm(a: Vector) -> float:
    return math.sqrt(max(dot(a, a), 0.0))


def _scaled(a: Vector, factor: float) -> Vector:
    return [x * factor for x in a]


def _zeros(params: Sequence[torch.Tensor]) -> Vector:
    # float32 at least, so that bf16 models still accumulate in a usable precision
    return [torch.zeros_like(p, dtype=torch.promote_types(p.dtype, torch.float32)) for p in params]


def _accumulate(total: Vector, parts: Sequence[torch.Tensor | None]) -> None:
    for acc, part in zip(total, parts, strict=True):
        if part is not None:
            acc += part.to(acc.dtype)


def random_unit(params: Sequence[torch.Tensor], seed: int) -> Vector:
    """A seeded Gaussian direction over `params` (drawn on the CPU), unit length."""
    gen = torch.Generator().manual_seed(seed)
    v = [
        torch.randn(p.shape, generator=gen).to(
            p.device, torch.promote_types(p.dtype, torch.float32)
        )
        for p in params
    ]
    return _scaled(v, 1.0 / norm(v))


# --- derivatives -------------------------------------------------------------------------


def gradient(terms: LossTerms, params: Sequence[nn.Parameter]) -> tuple[float, Vector]:
    """The loss Σ terms and its gradient over `params`, batch by batch.

    Args:
        terms: yields scalar loss terms (one graph at a time, so memory is one batch's).
        params: the subset; each must have `requires_grad=True`.

    Returns:
        (loss, gradient); parameters the loss does not reach get an exact zero.
    """
    total, grad = 0.0, _zeros(params)
    for term in terms():
        total += float(term.detach().double())
        if term.requires_grad:
            _accumulate(grad, torch.autograd.grad(term, params, allow_unused=True))
    return total, grad


def hessian_vector_product(terms: LossTerms, params: Sequence[nn.Parameter], v: Vector) -> Vector:
    """H v for the loss Σ terms, by double backprop: ∇_θ ⟨∇_θ L, v⟩.

    Attention runs in PyTorch's math kernel here, since the fused kernels have no double
    backward. A term whose gradient does not depend on θ_S contributes exactly zero.

    Args:
        terms: as in `gradient`.
        params: the subset θ_S.
        v: a vector over θ_S (cast to each parameter's dtype for the product).

    Returns:
        H v, in the dtype of `_zeros(params)`.
    """
    out = _zeros(params)
    with sdpa_kernel(SDPBackend.MATH):
        for term in terms():
            if not term.requires_grad:
                continue
            grads = torch.autograd.grad(term, params, create_graph=True, allow_unused=True)
            inner = [
                (g * x.to(g.dtype)).sum() for g, x in zip(grads, v, strict=True) if g is not None
            ]
            total = torch.stack(inner).sum() if inner else None
            if total is not None and total.requires_grad:
                _accumulate(out, torch.autograd.grad(total, params, allow_unused=True))
    return out


def forward_over_reverse_product(
    terms: Sequence[SubsetTerm], params: Sequence[nn.Parameter], v: Vector
) -> Vector:
    """H v for the loss Σ terms, as the directional derivative of the gradient along v:
    `jvp(grad(term), θ_S, v)`, one batch at a time.

    One forward pass carrying tangents and one backward pass per batch; no first-order graph
    is built for a second backward, so a product costs about one gradient and its memory is
    one batch's. Equal to `hessian_vector_product` up to float rounding. Attention runs in
    PyTorch's math kernel, as for the double backward.

    Args:
        terms: one pure function per batch of θ_S's values (e.g. through
            `torch.func.functional_call`); their sum is the loss.
        params: the subset θ_S (their current values are the point H is taken at).
        v: a vector over θ_S.

    Returns:
        H v, in the dtype of `_zeros(params)`.
    """
    primals = tuple(p.detach() for p in params)
    tangents = tuple(x.to(p.dtype) for p, x in zip(params, v, strict=True))
    out = _zeros(params)
    with sdpa_kernel(SDPBackend.MATH):
        for term in terms:
            _, hv = torch.func.jvp(torch.func.grad(term), (primals,), (tangents,))
            _accumulate(out, hv)
    return out


class RetainedHessian:
    """v ↦ H v like `hessian_vector_product`, keeping each batch's first-order graph
    (∇ term with `create_graph`) from the first call, so later products run only the second
    backward pass: about a third of the work, for the memory of every batch's graph at once
    (`retained_graph_bytes` says whether that fits). Same numbers as the plain product.

    Call `release()` (or drop the object) to free the graphs.
    """

    def __init__(self, terms: LossTerms, params: Sequence[nn.Parameter]):
        self.terms, self.params = terms, params
        self.grads: list[tuple[torch.Tensor | None, ...]] | None = None

    def __call__(self, v: Vector) -> Vector:
        if self.grads is None:
            self.grads = []
            with sdpa_kernel(SDPBackend.MATH):
                for term in self.terms():
                    if term.requires_grad:
                        self.grads.append(
                            torch.autograd.grad(
                                term, self.params, create_graph=True, allow_unused=True
                            )
                        )
        out = _zeros(self.params)
        for grads in self.grads:
            inner = [
                (g * x.to(g.dtype)).sum() for g, x in zip(grads, v, strict=True) if g is not None
            ]
            total = torch.stack(inner).sum() if inner else None
            if total is not None and total.requires_grad:
                parts = torch.autograd.grad(
                    total, self.params, retain_graph=True, allow_unused=True
                )
                _accumulate(out, parts)
        return out

    def release(self) -> None:
        self.grads = None


def retained_graph_bytes(tokens: int, vocab: int, hidden: int, layers: int) -> int:
    """A generous size of the double-backward graphs `RetainedHessian` keeps for `tokens`
    scored positions: fp32 logits and their gradients (3 × vocab floats a token) and about
    40 hidden-size floats a token per layer (attention and MLP intermediates, saved twice)."""
    return 4 * tokens * (3 * vocab + 40 * hidden * layers)


def power_iteration(
    hvp: Callable[[Vector], Vector],
    start: Vector,
    iterations: int,
    tolerance: float,
    stop: StopRule = "eigen-residual",
) -> Sharpness:
    """Dominant eigenvalue (largest |λ|, signed) of a symmetric H given only v ↦ H v.

    Args:
        hvp: the Hessian-vector product.
        start: a non-zero start vector (e.g. `random_unit`).
        iterations: cap on steps.
        tolerance: the stopping threshold, read by `stop`.
        stop: "eigen-residual": stop when ‖Hv − λv‖ ≤ tolerance·|λ| (v unit, λ the Rayleigh
            quotient vᵀHv), which puts an eigenvalue of H within tolerance·|λ|.
            "relative-change": stop when two successive estimates differ by at most
            tolerance·|λ|; cheaper, and a bound on the estimate's progress only, not on its
            distance to an eigenvalue (a slow power iteration can stall early).

    Returns:
        The estimate, its history, whether it converged, and whether H v was exactly 0
        (then the eigenvalue is reported as 0.0).

    Raises:
        FloatingPointError: H v is not finite (a diverged loss, not a fragility number).
    """
    v = _scaled(start, 1.0 / norm(start))
    history: list[float] = []
    for _ in range(iterations):
        hv = hvp(v)
        size = norm(hv)
        if not math.isfinite(size):
            raise FloatingPointError("Hessian-vector product is not finite")
        if size == 0.0:
            history.append(0.0)
            return Sharpness(0.0, history, converged=True, zero=True)
        eig = dot(v, hv)
        history.append(eig)
        if _stopped(history, size, tolerance, stop):
            return Sharpness(eig, history, converged=True, zero=False)
        v = _scaled(hv, 1.0 / size)
    return Sharpness(history[-1], history, converged=False, zero=False)


def _stopped(history: list[float], size: float, tolerance: float, stop: StopRule) -> bool:
    """Whether the last estimate in `history` (with ‖Hv‖ = size) meets the stopping rule."""
    eig = history[-1]
    if stop == "relative-change":
        return len(history) > 1 and abs(eig - history[-2]) <= tolerance * abs(eig)
    # ‖Hv − λv‖² = ‖Hv‖² − λ² for unit v
    return math.sqrt(max(size * size - eig * eig, 0.0)) <= tolerance * abs(eig)


def coupling(grad_a: Vector, grad_f: Vector, hvp: Callable[[Vector], Vector]) -> Coupling:
    """First-order (cosine) and curvature coupling of the fine-tune gradient g_F with L_A."""
    norm_a, norm_f = norm(grad_a), norm(grad_f)
    flags = ["zero-alignment-gradient"] if norm_a == 0.0 else []
    if norm_f == 0.0:
        return Coupling(None, None, [*flags, "zero-finetune-gradient"])
    unit_f = _scaled(grad_f, 1.0 / norm_f)
    cosine = None if norm_a == 0.0 else max(-1.0, min(1.0, dot(grad_a, unit_f) / norm_a))
    return Coupling(cosine, dot(unit_f, hvp(unit_f)), flags)
