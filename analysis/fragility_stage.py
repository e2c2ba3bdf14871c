"""The fragility stage of an audit: the child's own refusals in, a `Fragility` section out.

Glue between the ablation stage, which generates the child's greedy answers to the harmful
prompts (and keeps the ones the judge calls refusals), and `analysis.fragility`, which needs
them as token ids with the prompt length marked, plus benign text for the fine-tune.
"""

from __future__ import annotations

from torch import nn

from depthcard.analysis.fragility import FragilityInputs, fragility
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
    return fragility(model, inputs, settings, layers_path, selected), None
