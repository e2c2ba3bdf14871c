"""Forward passes that compute the prompts' shared opening once and reuse its cache.

Chat prompts under one template open with the same tokens (a system prompt, role markers):
24 of SmolLM2-135M-Instruct's 45 tokens on the project's harmful prompts. Under one ablation
setting the keys and values of that opening are the same for every prompt, so a first-token
pass runs it once (one row) and then only each prompt's own tokens, batched, against a copy
of its cache. Rows are laid out as [cached opening][padding][own tokens]: padding sits
between, masked out and skipped by the position ids, so every row's last token is in the
last column and only its logits are computed.

Whether a model family gives the same numbers this way is checked, not assumed: the first
batch a model sees is computed both ways, and a model whose results differ beyond float
rounding is run without the cache from then on (`verified`). "Float rounding" is measured on
the model where it matters: a gap over `TOLERANCE` is compared with what a change of layout
alone does to the plain pass (each row of the batch run by itself, unpadded), and the cache is
kept when its gap is within `LAYOUT_FACTOR` times that. In float32 the layout moves
probabilities by about 1e-6, so `TOLERANCE` decides; in bfloat16 it moves them by about as
much as the cache does (0.034 and 0.027 on 16 prompts of Qwen2.5-Coder-0.5B-Instruct,
`bench/stage_precision.py`).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

MIN_PREFIX = 4
"""Shared openings shorter than this are not worth a separate pass."""

TOLERANCE = 2e-3
"""Largest difference in first-token probability (any token) the check accepts outright."""

LAYOUT_FACTOR = 2.0
"""A larger gap is accepted up to this multiple of the plain pass's own layout gap."""

_VERDICT = "_depthcard_prefix_cache_ok"


def shared_prefix_length(ids: list[list[int]]) -> int:
    """Tokens every row opens with, leaving each row at least one token of its own."""
    if not ids:
        return 0
    shared = len(os.path.commonprefix(ids))
    return max(0, min(shared, min(len(x) for x in ids) - 1))


def suffix_batch(suffixes: list[list[int]], pad_id: int, p: int, device: torch.device):
    """(input ids (b, w), attention mask (b, p + w), position ids (b, w)) for rows laid out
    as [p cached tokens][padding][suffix]."""
    w = max(len(s) for s in suffixes)
    x = torch.full((len(suffixes), w), pad_id, dtype=torch.long)
    mask = torch.zeros((len(suffixes), p + w), dtype=torch.long)
    mask[:, :p] = 1
    for row, s in enumerate(suffixes):
        x[row, w - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[row, p + w - len(s) :] = 1
    pos = p + (mask[:, p:].cumsum(-1) - 1).clamp_min(0)
    return x.to(device), mask.to(device), pos.to(device)


def _cache_keyword(model: nn.Module) -> str:
    """The forward argument that takes a cache: `cache` (transformers ≥ 5.2x) or the older
    `past_key_values`, which later releases deprecate."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def opening_cache(model: nn.Module, prefix: list[int], device: torch.device):
    """The key/value cache of `prefix` (one row), under whatever hooks are active."""
    x = torch.tensor([prefix], dtype=torch.long, device=device)
    out = model(input_ids=x, use_cache=True)
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def last_logits_after(model: nn.Module, cache, suffixes, pad_id: int, p: int, device):
    """(batch, vocab) logits of each row's last token, the opening taken from `cache`."""
    batch_cache = copy.deepcopy(cache)
    batch_cache.batch_repeat_interleave(len(suffixes))
    x, mask, pos = suffix_batch(suffixes, pad_id, p, device)
    return model(
        input_ids=x,
        attention_mask=mask,
        position_ids=pos,
        use_cache=True,
        logits_to_keep=1,
        **{_cache_keyword(model): batch_cache},
    ).logits[:, -1, :]


def verified(model: nn.Module) -> bool | None:
    """The check's verdict for `model`: True, False, or None (not checked yet)."""
    return getattr(model, _VERDICT, None)


def probability_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference in probability between two log-probability tensors."""
    return float((a.float().exp() - b.float().exp()).abs().max())


def allowed_gap(layout_gap: float | None) -> float:
    """The largest cache gap accepted, given the plain pass's own layout gap (if measured)."""
    return TOLERANCE if layout_gap is None else max(TOLERANCE, LAYOUT_FACTOR * layout_gap)


def record_check(
    model: nn.Module,
    cached: torch.Tensor,
    plain: torch.Tensor,
    layout: Callable[[], torch.Tensor] | None = None,
) -> bool:
    """Compare one batch's first-token log-probs both ways and remember the verdict.

    `layout` computes the same batch's log-probs in another layout (row by row); it is run
    only when the gap is over `TOLERANCE`, to tell rounding from a cache that is wrong.
    """
    gap = probability_gap(cached, plain)
    layout_gap = probability_gap(layout(), plain) if gap > TOLERANCE and layout else None
    ok = gap <= allowed_gap(layout_gap)
    setattr(model, _VERDICT, ok)
    if not ok:
        log.warning(
            "a cached chat-template opening changes first-token probabilities by %.2g on this "
            "model (running each prompt alone changes them by %s); first-token passes run "
            "without it",
            gap,
            "—" if layout_gap is None else f"{layout_gap:.2g}",
        )
    elif layout_gap is not None:
        log.info(
            "a cached chat-template opening changes first-token probabilities by %.2g, within "
            "the %.2g that running each prompt alone does: rounding, the cache is used",
            gap,
            layout_gap,
        )
    return ok
