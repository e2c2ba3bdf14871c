"""The fragility stage of an audit: the child's own refusals in, a `Fragility` section out.

Glue between the ablation stage, which generates the child's greedy answers to the harmful
prompts (and keeps the ones the judge calls refusals), and `analysis.fragility`, which needs
them as token ids with the prompt length marked, plus benign text for the fine-tune.

The stage runs in float32 on a CPU whatever dtype the audit chose for its forward-only
stages: the benign fine-tune's SGD steps are far below half precision's resolution (bfloat16
keeps 8 bits of mantissa, so an update under 0.4 % of a weight rounds away), and on a CPU the
float32 copy costs only time. On a GPU the model stays as loaded, since a float32 copy would
double the weights' memory (docs/fragility.md, "Precision and kernels").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from depthcard.analysis.fragility import HALF_DTYPES, FragilityInputs, fragility
from depthcard.analysis.prompt_inputs import TokenizedInputs
from depthcard.schemas.sections import Fragility, FragilitySettings


def refusal_rows(
    prompt_ids: list[list[int]], refusals: dict[int, str], tokenizer
) -> tuple[list[list[int]], list[int]]:
    """(prompt + answer ids, prompt length) per refusal; empty answers have nothing to score.

    The answer is re-tokenized from its decoded text, which gives the generated ids up to
    the tokenizer's merge choices at the seam — what a fine-tune on the text would see.
    """
    rows, lengths = [], []
    for i in sorted(refusals):
        answer = tokenizer(refusals[i], add_special_tokens=False)["input_ids"]
        if answer:
            rows.append(list(prompt_ids[i]) + list(answer))
            lengths.append(len(prompt_ids[i]))
    return rows, lengths


def stage_dtype(model_dtype: torch.dtype, device_type: str) -> torch.dtype:
    """The dtype the stage runs in: float32 for a half-precision model on a CPU, else the
    model's own."""
    return torch.float32 if model_dtype in HALF_DTYPES and device_type == "cpu" else model_dtype


@contextmanager
def running_in(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """The model's floating-point parameters and buffers cast to `dtype` for the block, and
    cast back after it (exactly: every value came from the narrower dtype)."""
    before = next(p.dtype for p in model.parameters() if p.is_floating_point())
    if before == dtype:
        yield
        return
    model.to(dtype)
    try:
        yield
    finally:
        model.to(before)


def fragility_stage(
    model: nn.Module,
    tokenizer,
    tok: TokenizedInputs,
    refusals: dict[int, str],
    settings: FragilitySettings,
    layers_path: str | None = None,
    selected: int | None = None,
) -> tuple[Fragility | None, str | None]:
    """(section, None), or (None, the reason the stage could not run).

    `selected` is l*, which `settings.selected_window` centres θ_S on.
    """
    benign = tok.ids.get("capability_raw") or []
    if not benign:
        return None, "no capability prompt set (the benign fine-tune needs its text)"
    rows, lengths = refusal_rows(tok.ids["harmful_chat"], refusals, tokenizer)
    if not rows:
        return None, "the child gave no non-empty refusal to score"
    inputs = FragilityInputs(rows, lengths, benign, tok.pad_id)
    first = next(p for p in model.parameters() if p.is_floating_point())
    dtype = stage_dtype(first.dtype, first.device.type)
    with running_in(model, dtype):
        section = fragility(model, inputs, settings, layers_path, selected)
    return section.model_copy(update={"dtype": str(dtype).removeprefix("torch.")}), None
