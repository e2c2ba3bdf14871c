"""Answer NLL: how unlikely the unablated child finds an answer, per token.

`answer_nll` teacher-forces each (prompt, answer) pair through a model and returns the mean
negative log-likelihood of the answer's tokens given the formatted prompt. Run on the
unablated child, it is the judge's second test for *broken*: an ablated model's gibberish
scores far above the child's own answers (docs/judges.md).
"""

from __future__ import annotations

import torch
from torch import nn

from depthcard.analysis.generation import format_prompt, length_batches
from depthcard.analysis.progress import purpose


def _pairs(tokenizer, prompts, answers, use_chat_template) -> list[tuple[list[int], int]]:
    """(prompt + answer ids, number of answer ids) per pair."""
    add_special = not use_chat_template
    out = []
    for p, a in zip(prompts, answers, strict=True):
        head = tokenizer(
            format_prompt(tokenizer, p, use_chat_template), add_special_tokens=add_special
        )
        tail = tokenizer(a, add_special_tokens=False)["input_ids"] if a.strip() else []
        out.append((list(head["input_ids"]) + list(tail), len(tail)))
    return out


def _batch_nll(model: nn.Module, rows: list[tuple[list[int], int]], pad_id: int) -> list[float]:
    """Mean NLL of the last `n` tokens of each row, rows right-padded into one batch."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (batch, seq)
    mask = torch.zeros_like(x)
    for i, (ids, _) in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1)  # (batch, seq, vocab)
    out = []
    for i, (ids, n) in enumerate(rows):
        start = len(ids) - n  # first answer token; predicted from position start - 1
        targets = torch.tensor(ids[start:], device=logp.device)
        picked = logp[i, start - 1 : len(ids) - 1].gather(-1, targets[:, None])  # (n, 1)
        out.append(float(-picked.double().mean()))
    return out


@purpose("answer-nll")
def answer_nll(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    answers: list[str],
    *,
    batch_size: int = 16,
    use_chat_template: bool = True,
) -> list[float | None]:
    """Mean per-token NLL (nats) of each answer given its prompt, teacher-forced.

    Args:
        model: a transformers causal LM, run as it is (no hooks are added here).
        tokenizer: its tokenizer; the prompt is formatted as in `generate_responses`.
        prompts: user messages.
        answers: one answer per prompt; an empty/whitespace answer has no tokens and gets None.
        batch_size: pairs per forward pass, grouped by length.
        use_chat_template: format prompts as one chat turn (as the answers were generated).

    Returns:
        One mean NLL per answer, None where the answer has no tokens.

    Example:
        >>> answer_nll(child, tok, ["How do I bake bread?"], ["Mix flour and water."])
        [1.83]
    """
    rows = _pairs(tokenizer, prompts, answers, use_chat_template)
    scored = [i for i, (_, n) in enumerate(rows) if n > 0]
    out: list[float | None] = [None] * len(rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in length_batches([len(rows[i][0]) for i in scored], batch_size):
                idx = [scored[j] for j in batch]
                for i, v in zip(
                    idx, _batch_nll(model, [rows[i] for i in idx], pad_id), strict=True
                ):
                    out[i] = v
    finally:
        model.train(was_training)
    return out
