"""Batched greedy generation: the answers that refusal judges read.

One function, `generate_responses`, for any Hugging Face causal LM and its tokenizer.
Prompts are formatted (chat template with a generation prompt, or raw text), grouped by
length so batches carry little padding, left-padded so that every row's next token sits in
the last column, and decoded greedily. Only the newly generated tokens are decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from depthcard.analysis.progress import add_generated, purpose, task
from depthcard.schemas.errors import UserError

log = logging.getLogger(__name__)


def format_prompt(tokenizer, text: str, use_chat_template: bool) -> str:
    """One user turn in the tokenizer's chat template (with generation prompt), or `text`."""
    if not use_chat_template:
        return text
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, ties by index)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@contextmanager
def padding_for_generation(tokenizer) -> Iterator[int]:
    """Left padding and a pad token for the duration of the block; yields the pad id.

    A tokenizer without a pad token borrows its eos token. Both settings are put back on
    exit, so the caller's tokenizer is unchanged afterwards.
    """
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    if pad is None:
        if tokenizer.eos_token is None:
            raise UserError("tokenizer has neither a pad nor an eos token; set pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    try:
        yield tokenizer.pad_token_id
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


class StopDecided(StoppingCriteria):
    """Stops each row once `decided(text generated so far)` holds (rows stop one by one;
    a stopped row is padded while the others go on)."""

    def __init__(self, tokenizer, prompt_width: int, decided: Callable[[str], bool]):
        self.tokenizer, self.width, self.decided = tokenizer, prompt_width, decided

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor([self.decided(t) for t in texts], device=input_ids.device)


def _generate_batch(
    model: nn.Module,
    tokenizer,
    strings: list[str],
    add_special: bool,
    pad_id: int,
    max_new: int,
    stop_when: Callable[[str], bool] | None = None,
) -> list[str]:
    """Greedy continuations of one batch of formatted prompts, new tokens only."""
    enc = tokenizer(strings, return_tensors="pt", padding=True, add_special_tokens=add_special)
    device = next(model.parameters()).device
    input_ids = enc["input_ids"].to(device)  # (batch, seq), left-padded
    width = input_ids.shape[1]
    stop = (
        None
        if stop_when is None
        else StoppingCriteriaList([StopDecided(tokenizer, width, stop_when)])
    )
    out = model.generate(
        input_ids=input_ids,
        attention_mask=enc["attention_mask"].to(device),
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=pad_id,
        stopping_criteria=stop,
    )  # (batch, seq + new)
    new = out[:, width:]
    add_generated(int((new != pad_id).sum()))
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def generate_responses(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    use_chat_template: bool = True,
    stop_when: Callable[[str], bool] | None = None,
) -> list[str]:
    """Greedy answers to `prompts`, in the order given.

    Args:
        model: any transformers causal LM (its `generation_config` decides the stop tokens).
        tokenizer: the model's tokenizer; it needs a chat template when
            `use_chat_template` is True. Its padding side and pad token are set only while
            generating (a missing pad token borrows eos) and restored afterwards.
        prompts: user messages (or raw texts).
        max_new_tokens: generation length cap.
        batch_size: prompts per forward pass; prompts are batched by token length.
        use_chat_template: wrap each prompt as one user turn with a generation prompt;
            False feeds the raw text (with the tokenizer's usual special tokens, e.g. BOS).
        stop_when: a row stops as soon as this holds for its text so far (e.g. a refusal
            phrase has been seen, `RefusalJudge.decided_refusal`); None = always up to
            `max_new_tokens` or the stop tokens.

    Returns:
        One decoded answer per prompt, special tokens skipped, prompt not included.

    Example:
        >>> generate_responses(model, tok, ["How do I bake bread?"], max_new_tokens=32)
        ['Sure! Here is ...']
    """
    if not prompts:
        return []
    strings = [format_prompt(tokenizer, p, use_chat_template) for p in prompts]
    # Chat strings already hold the template's special tokens; raw text gets the usual ones.
    add_special = not use_chat_template
    lengths = [len(ids) for ids in tokenizer(strings, add_special_tokens=add_special)["input_ids"]]
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        batches = length_batches(lengths, batch_size)
        with (
            padding_for_generation(tokenizer) as pad_id,
            torch.inference_mode(),
            purpose("generation"),
            task("generate", total=len(prompts), unit="answer") as bar,
        ):
            for batch in batches:
                texts = [strings[i] for i in batch]
                outs = _generate_batch(
                    model, tokenizer, texts, add_special, pad_id, max_new_tokens, stop_when
                )
                for i, text in zip(batch, outs, strict=True):
                    answers[i] = text
                bar.advance(len(batch))
    finally:
        model.train(was_training)
    log.debug("generated %d answers (max %d new tokens)", len(answers), max_new_tokens)
    return answers
