"""The four matrices of docs/metrics.md, for every residual point at once.

Inputs are activation rows (prompt, point, d_model) read at the same position of the same
token ids; outputs keep that shape. Differences are taken in float64.
"""

from __future__ import annotations

import torch


def aligned_shift(child_chat: torch.Tensor, base_chat: torch.Tensor) -> torch.Tensor:
    """Δ_aligned(x) = h^{I,chat}(x) − h^{B,chat}(x): alignment shift, template held fixed."""
    return child_chat.to(torch.float64) - base_chat.to(torch.float64)


def template_shift(base_chat: torch.Tensor, base_raw: torch.Tensor) -> torch.Tensor:
    """Δ_template(x) = h^{B,chat}(x) − h^{B,raw}(x): formatting shift alone."""
    return base_chat.to(torch.float64) - base_raw.to(torch.float64)


def naive_shift(child_chat: torch.Tensor, base_raw: torch.Tensor) -> torch.Tensor:
    """Δ_naive(x) = h^{I,chat}(x) − h^{B,raw}(x): what an uncontrolled audit sees."""
    return child_chat.to(torch.float64) - base_raw.to(torch.float64)


def difference_in_differences(
    aligned_harmful: torch.Tensor, aligned_harmless: torch.Tensor
) -> torch.Tensor:
    """M_DiD rows: Δ_aligned(x_s) − mean over Dh of Δ_aligned(x_h), per point."""
    return aligned_harmful - aligned_harmless.to(torch.float64).mean(0, keepdim=True)


def child_contrast(child_harmful: torch.Tensor, child_harmless: torch.Tensor) -> torch.Tensor:
    """Child-only stand-in for M_DiD: h^{I,chat}(x_s) − mean over Dh of h^{I,chat}."""
    return child_harmful.to(torch.float64) - child_harmless.to(torch.float64).mean(0, keepdim=True)


def four_matrices(
    child_chat_s: torch.Tensor,
    base_chat_s: torch.Tensor,
    base_raw_s: torch.Tensor,
    child_chat_h: torch.Tensor,
    base_chat_h: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """M_naive, M_template, M_aligned (rows over Ds), M_DiD, and Δ_aligned over Dh.

    Each value is (prompt, point, d_model) float64.
    """
    aligned_s = aligned_shift(child_chat_s, base_chat_s)
    aligned_h = aligned_shift(child_chat_h, base_chat_h)
    return {
        "naive": naive_shift(child_chat_s, base_raw_s),
        "template": template_shift(base_chat_s, base_raw_s),
        "aligned": aligned_s,
        "did": difference_in_differences(aligned_s, aligned_h),
        "aligned_harmless": aligned_h,
    }
