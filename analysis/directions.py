"""Difference-of-means directions, projections and the norm-based layer selection rule."""

from __future__ import annotations

import math

import torch

from depthcard.analysis.capture import Activations


def refusal_direction(harmful: Activations, harmless: Activations) -> torch.Tensor:
    """r_l = mean_Ds h − mean_Dh h on the child, chat format: (point, d_model) float64."""
    return harmful.mean() - harmless.mean()


def alignment_direction(child_harmful: Activations, base_harmful: Activations) -> torch.Tensor:
    """v_l = mean_Ds h^{I,chat} − mean_Ds h^{B,chat}: (point, d_model) float64."""
    return child_harmful.mean() - base_harmful.mean()


def unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of `v` scaled to unit norm; zero rows stay zero."""
    norm = v.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, v / norm.clamp_min(1e-300), torch.zeros_like(v))


def projections(acts: Activations, direction: torch.Tensor) -> torch.Tensor:
    """s_l = mean_x ⟨h_l(x), v̂_l⟩ for each point: (point,) float64 (0 where v_l = 0)."""
    return (acts.mean() * unit(direction.to(torch.float64))).sum(-1)


def erosion(
    s_third: torch.Tensor,
    s_child: torch.Tensor,
    s_base: torch.Tensor,
    scale: torch.Tensor | None = None,
    tolerance: float = 1e-12,
) -> list[float | None]:
    """e_l = (s_F − s_B)/(s_I − s_B); None where the child does not move off the base.

    "Does not move" means |s_I − s_B| ≤ tolerance · scale_l, with scale_l the mean activation
    norm at the point (or max(|s_I|, |s_B|, 1) without one): dividing by a gap at the noise
    floor would give an arbitrary, possibly huge e_l. Never NaN or inf.
    """
    out: list[float | None] = []
    scales = [None] * len(s_child) if scale is None else scale.tolist()
    rows = zip(s_third.tolist(), s_child.tolist(), s_base.tolist(), scales, strict=True)
    for f, i, b, ref in rows:
        gap = i - b
        ref = max(abs(i), abs(b), 1.0) if ref is None else ref
        value = None if abs(gap) <= tolerance * ref else (f - b) / gap
        out.append(value if value is None or math.isfinite(value) else None)
    return out


def layer_window(num_blocks: int, window: tuple[float, float]) -> tuple[int, int]:
    """Inclusive point range [⌈lo·L⌉, ⌊hi·L⌋], widened to 1..L when it would be empty."""
    lo, hi = math.ceil(window[0] * num_blocks), math.floor(window[1] * num_blocks)
    if lo > hi:
        return (min(1, num_blocks), num_blocks)
    return (lo, hi)


def select_layer_by_norm(norm_ratio: torch.Tensor, window: tuple[int, int]) -> int:
    """The point in `window` with the largest ‖r_l‖ / mean activation norm (first on ties)."""
    lo, hi = window
    segment = norm_ratio[lo : hi + 1]
    return lo + int(torch.argmax(segment))
