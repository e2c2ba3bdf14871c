"""The ablation stage: baseline refusal, l* by the ablation rule, the cost curve at l*.

Held out: l* is chosen on the fit half of the prompts; the baseline, the curve and min_k are
measured on the eval half (docs/metrics.md, "Held-out evaluation").

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
from depthcard.analysis.prompt_inputs import HeldOutSplit, PromptInputs, TokenizedInputs
from depthcard.schemas.report import AbsentSection, AuditConfig, LayerTrial, SelectedLayer
from depthcard.schemas.sections import Ablation, JudgedAnswer


@dataclass
class AblationOutcome:
    selected: SelectedLayer | None = None
    section: Ablation | None = None
    baseline_rate: float | None = None
    refused: int | None = None
    refusals: dict[int, str] = field(default_factory=dict)  # harmful prompt index → refusal (eval)
    judged: int | None = None  # eval prompts judged for the baseline rate
    absent: list[AbsentSection] = field(default_factory=list)
    samples: list[JudgedAnswer] = field(default_factory=list)  # rows of samples.jsonl


def ablation_inputs(
    tok: TokenizedInputs,
    prompts: PromptInputs,
    part: dict[str, list[int]],
    refusal_ids,
    name: str = "eval",
) -> AblationInputs:
    """The ablation stage's inputs restricted to one half of the split (`part`: role → idx),
    `name` being the half's name that judged answers are labelled with."""

    def pick(key: str, role: str) -> list:
        rows = tok.ids.get(key, [])
        return [rows[i] for i in part[role]] if rows and role in part else rows

    return AblationInputs(
        harmful_ids=pick("harmful_chat", "harmful"),
        harmless_ids=pick("harmless_chat", "harmless"),
        capability_ids=pick("capability_raw", "capability"),
        harmful_texts=[prompts.harmful.texts[i] for i in part["harmful"]],
        pad_id=tok.pad_id,
        refusal_ids=refusal_ids,
        split=name,
        prompt_ids=list(part["harmful"]),
        harmless_texts=pick_texts(prompts.harmless.texts, part.get("harmless")),
    )


def pick_texts(texts: list[str], idx: list[int] | None) -> list[str]:
    return list(texts) if idx is None else [texts[i] for i in idx]


def ablation_stage(
    model,
    tokenizer,
    tok: TokenizedInputs,
    prompts: PromptInputs,
    analysis: LayerAnalysis,
    cfg: AuditConfig,
    layers_path,
    split: HeldOutSplit,
) -> AblationOutcome:
    """Baseline refusal (eval), l* by the ablation rule (fit), then the cost curve (eval)."""
    layers = decoder_layers(model, layers_path)
    judge = get_judge(cfg.judge)
    refusal_ids = refusal_token_ids(tokenizer)
    data = ablation_inputs(tok, prompts, split.eval, refusal_ids)
    settings = AblationSettings(
        judge=judge,
        max_new_tokens=cfg.max_new_tokens,
        threshold=cfg.refusal_threshold,
        batch_size=cfg.batch_size,
        kl_budget=cfg.kl_budget,
        max_broken_share=cfg.max_broken_share,
        min_k_search=cfg.min_k_search,
        early_stop=cfg.early_stop,
        capability_ce=cfg.capability_ce,
        reuse_opening=cfg.reuse_opening,
    )
    ev = Evaluator(model, layers, tokenizer, data, settings)
    base = ev.measure_baseline()
    total = len(data.harmful_texts)
    out = AblationOutcome(
        baseline_rate=base.refusal_rate,
        refused=len(base.refusals),
        refusals={split.eval["harmful"][i]: text for i, text in base.refusals.items()},
        judged=total,
    )
    if base.refusal_rate < cfg.refusal_threshold:
        reason = (
            f"no refusal behaviour to measure: {out.refused} of {total} held-out harmful prompts "
            "refused"
        )
        out.absent.append(AbsentSection(section="ablation", reason=reason))
        return out
    n_points = len(layers) + 1
    r_dirs = torch.stack([analysis.tensors[f"refusal_direction.{p}"] for p in range(n_points)])
    window = parts.analysis_window(analysis.layers, cfg)
    fit = Evaluator(
        model,
        layers,
        tokenizer,
        ablation_inputs(tok, prompts, split.fit, refusal_ids, "fit"),
        settings,
    )
    choice = select_layer_by_ablation(fit, r_dirs.double(), window, cfg.layer_bootstraps, cfg.seed)
    if choice.chosen is not None:
        drop, kl = next((d, k) for layer, d, k in choice.tried if layer == choice.chosen)
        selected = parts.select_by_ablation(choice.chosen, drop, kl, window, cfg.kl_budget)
    else:  # no layer qualified: the norm-ratio rule decides, and the trials say why
        selected = parts.select_by_norm(analysis.layers, cfg)
    out.selected = selected.model_copy(
        update={
            "trials": [
                LayerTrial(layer=la, drop=d, kl=k, chosen=la == selected.layer)
                for la, d, k in choice.tried
            ],
            "stability": choice.stability if choice.tried else None,
            "bootstraps": choice.bootstraps if choice.tried else None,
        }
    )
    layer = out.selected.layer
    out.section = ablation_curve(
        ev,
        layer,
        r_dirs[layer].double(),
        analysis.tensors[f"did_singular_vectors.{layer}"].double(),
        judge.name,
    )
    out.samples = ev.samples
    return out
