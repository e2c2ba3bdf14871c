"""The ablation stage: baseline refusal, l* by the ablation rule, the cost curve at l*.

Needs the child's forward pass (it generates answers under each ablation), so the orchestrator
calls it while the child is resident; everything it measures is in `ablation_cost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from depthcard.analysis import report_parts as parts
from depthcard.analysis.ablation import refusal_token_ids
from depthcard.analysis.ablation_cost import (
    AblationInputs,
    AblationSettings,
    Evaluator,
    ablation_curve,
    select_layer_by_ablation,
)
from depthcard.analysis.judges import get_judge
from depthcard.analysis.layer_metrics import LayerAnalysis
from depthcard.analysis.models import decoder_layers
from depthcard.analysis.prompt_inputs import PromptInputs, TokenizedInputs
from depthcard.schemas.report import AbsentSection, AuditConfig, SelectedLayer
from depthcard.schemas.sections import Ablation


@dataclass
class AblationOutcome:
    selected: SelectedLayer | None = None
    section: Ablation | None = None
    baseline_rate: float | None = None
    refused: int | None = None
    refusals: dict[int, str] = field(default_factory=dict)  # prompt index → refusal text
    absent: list[AbsentSection] = field(default_factory=list)


def ablation_stage(
    model,
    tokenizer,
    tok: TokenizedInputs,
    prompts: PromptInputs,
    analysis: LayerAnalysis,
    cfg: AuditConfig,
    layers_path,
) -> AblationOutcome:
    """Baseline refusal, l* by the ablation rule, then the cost curve at l*."""
    layers = decoder_layers(model, layers_path)
    judge = get_judge(cfg.judge)
    data = AblationInputs(
        harmful_ids=tok.ids["harmful_chat"],
        harmless_ids=tok.ids["harmless_chat"],
        capability_ids=tok.ids.get("capability_raw", []),
        harmful_texts=prompts.harmful.texts,
        pad_id=tok.pad_id,
        refusal_ids=refusal_token_ids(tokenizer),
    )
    settings = AblationSettings(
        judge=judge,
        max_new_tokens=cfg.max_new_tokens,
        threshold=cfg.refusal_threshold,
        batch_size=cfg.batch_size,
        kl_budget=cfg.kl_budget,
    )
    ev = Evaluator(model, layers, tokenizer, data, settings)
    base = ev.measure_baseline()
    total = len(data.harmful_texts)
    out = AblationOutcome(
        baseline_rate=base.refusal_rate, refused=len(base.refusals), refusals=base.refusals
    )
    if base.refusal_rate < cfg.refusal_threshold:
        reason = (
            f"no refusal behaviour to measure: {out.refused} of {total} harmful prompts refused"
        )
        out.absent.append(AbsentSection(section="ablation", reason=reason))
        return out
    n_points = len(layers) + 1
    r_dirs = torch.stack([analysis.tensors[f"refusal_direction.{p}"] for p in range(n_points)])
    window = parts.analysis_window(analysis.layers, cfg)
    chosen, tried = select_layer_by_ablation(ev, r_dirs.double(), window)
    if chosen is not None:
        drop, kl = next((d, k) for layer, d, k in tried if layer == chosen)
        out.selected = parts.select_by_ablation(chosen, drop, kl, window, cfg.kl_budget)
    layer = out.selected.layer if out.selected else parts.select_by_norm(analysis.layers, cfg).layer
    out.section = ablation_curve(
        ev,
        layer,
        r_dirs[layer].double(),
        analysis.tensors[f"did_singular_vectors.{layer}"].double(),
        judge.name,
    )
    return out
