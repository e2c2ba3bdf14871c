"""Directional ablation and what it costs: refusal score, refusal rate, KL and ΔCE.

Ablating directions `d_1..d_k` projects them out of the residual stream at every point
(the embedding output and each decoder block's output): `h ← h − Q Qᵀ h` with Q an
orthonormal basis of their span. Always through hooks that are removed afterwards, never
by editing weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import nn

from depthcard.analysis.capture import pad_left
from depthcard.analysis.hooks import residual_hooks
from depthcard.analysis.models import input_device
from depthcard.analysis.prefix_cache import (
    MIN_PREFIX,
    last_logits_after,
    opening_cache,
    record_check,
    shared_prefix_length,
    verified,
)
from depthcard.analysis.progress import purpose

# Words that open a refusal in the chat models we audit; their first tokens (with and
# without a leading space) form the refusal-opening set of a tokenizer.
REFUSAL_OPENERS = ("I", "Sorry", "I'm", "As", "Unfortunately", "I cannot", "I can't", "No")


def orthonormal_basis(directions: torch.Tensor, tol: float = 1e-8) -> torch.Tensor:
    """(d, k') orthonormal basis of the rows of `directions` (k, d), in order (Gram–Schmidt).

    A direction (numerically) inside the span of earlier ones is dropped, so k' ≤ k.
    """
    basis: list[torch.Tensor] = []
    for v in directions.to(torch.float64):
        w = v.clone()
        for b in basis:
            w -= (w @ b) * b
        norm = w.norm()
        if norm > tol * max(float(v.norm()), 1e-300):
            basis.append(w / norm)
    d = directions.shape[-1]
    return torch.stack(basis, dim=1) if basis else torch.zeros((d, 0), dtype=torch.float64)


def project_out(hidden: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """h − (h Q) Qᵀ for hidden (..., d) and basis Q (d, k), in hidden's dtype."""
    q = basis.to(device=hidden.device, dtype=hidden.dtype)
    return hidden - (hidden @ q) @ q.T


@contextmanager
def ablated(layers: nn.ModuleList, basis: torch.Tensor | None) -> Iterator[None]:
    """Inside the block, the model runs with `basis` projected out at every point."""
    if basis is None or basis.shape[1] == 0:
        with nullcontext():
            yield
        return
    with residual_hooks(layers, lambda point, hidden: project_out(hidden, basis)):
        yield


def refusal_token_ids(tokenizer) -> list[int]:
    """First-token ids of REFUSAL_OPENERS under this tokenizer (with and without a space).

    Unknown and special tokens never count: a word the vocabulary lacks maps to `<unk>`,
    which says nothing about refusing.
    """
    excluded = set(tokenizer.all_special_ids)
    ids: set[int] = set()
    for word in REFUSAL_OPENERS:
        for text in (word, " " + word):
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            if tokens and tokens[0] not in excluded:
                ids.add(tokens[0])
    return sorted(ids)


@purpose("first-token")
def first_token_logprobs(
    model: nn.Module,
    ids: list[list[int]],
    pad_id: int,
    batch_size: int = 16,
    reuse_opening: bool = False,
) -> torch.Tensor:
    """(prompt, vocab) float32 log-probabilities of the first response token.

    Only the last position's logits are computed (`logits_to_keep=1`), sorted batches. With
    `reuse_opening`, the tokens every prompt opens with (the chat template's system prompt
    and role markers) run once and their cache is reused for every batch
    (`analysis.prefix_cache`; checked against the plain pass on the model's first batch).
    """
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[torch.Tensor | None] = [None] * len(ids)
    device = input_device(model)
    p = shared_prefix_length(ids) if reuse_opening and verified(model) is not False else 0
    with torch.inference_mode():
        cache = opening_cache(model, ids[0][:p], device) if p >= MIN_PREFIX else None
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = [ids[i] for i in chunk]
            if cache is None:
                logits = plain_last_logits(model, rows, pad_id, device)
            else:
                suffixes = [r[p:] for r in rows]
                logits = last_logits_after(model, cache, suffixes, pad_id, p, device)
                if verified(model) is None:
                    plain = plain_last_logits(model, rows, pad_id, device)
                    layout = partial(_row_by_row, model, rows, pad_id, device)
                    if not record_check(model, _logp(logits), _logp(plain), layout):
                        cache, logits = None, plain
            logp = _logp(logits).cpu()
            for row, i in enumerate(chunk):
                out[i] = logp[row]
    return torch.stack(out)  # type: ignore[arg-type]


def _row_by_row(model: nn.Module, rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """(row, vocab) first-token log-probs, each row run alone: the batch in another layout."""
    return torch.cat([_logp(plain_last_logits(model, [r], pad_id, device)) for r in rows])


def _logp(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


def plain_last_logits(model: nn.Module, rows: list[list[int]], pad_id: int, device):
    """(batch, vocab) last-token logits of left-padded rows, no cache."""
    x, mask, pos = pad_left(rows, pad_id, device)
    return model(
        input_ids=x, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1
    ).logits[:, -1, :]


def refusal_log_odds(logprobs: torch.Tensor, refusal_ids: list[int]) -> torch.Tensor:
    """(prompt,) log p(refusal opener) − log p(anything else), finite (clamped at ±30)."""
    p = logprobs[:, refusal_ids].exp().sum(-1).clamp(1e-13, 1 - 1e-13)
    return (torch.log(p) - torch.log1p(-p)).clamp(-30.0, 30.0)


def mean_kl(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over prompts of KL(p_ref ‖ p_other) from (prompt, vocab) log-probabilities, ≥ 0."""
    kl = (reference.exp() * (reference - other)).sum(-1)
    return float(kl.clamp_min(0.0).mean())


@purpose("cross-entropy")
def mean_cross_entropy(
    model: nn.Module, ids: list[list[int]], pad_id: int, batch_size: int = 8
) -> float:
    """Mean next-token cross-entropy (nats/token) of `model` on token sequences `ids`."""
    total, count = 0.0, 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = [ids[i] for i in order[start : start + batch_size]]
        x, mask, pos = pad_left(chunk, pad_id, input_device(model))
        with torch.inference_mode():
            logits = model(input_ids=x, attention_mask=mask, position_ids=pos, use_cache=False)
        logp = torch.log_softmax(logits.logits[:, :-1].float(), dim=-1)
        target = x[:, 1:]
        nll = -logp.gather(-1, target[..., None])[..., 0]
        valid = (mask[:, 1:] * mask[:, :-1]).bool()
        total += float(nll[valid].sum())
        count += int(valid.sum())
    return total / max(count, 1)
