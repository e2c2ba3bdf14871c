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
    attack_basis,
    coherent,
)
from depthcard.analysis.judges import get_judge, refusal_to_remove, samples_sha256
from depthcard.analysis.layer_choice import LayerChoice, select_layer
from depthcard.analysis.layer_metrics import Captures, LayerAnalysis
from depthcard.analysis.models import decoder_layers
from depthcard.analysis.prompt_inputs import HeldOutSplit, PromptInputs, TokenizedInputs
from depthcard.schemas.report import (
    AbsentSection,
    AuditConfig,
    LayerCandidate,
    LayerTrial,
    SelectedLayer,
)
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
    fit: Captures,
) -> AblationOutcome:
    """Baseline refusal (eval), l* by the ablation rule (fit; `fit` holds the child's fit
    activations), then the cost curve (eval) and the runner-up layers' min_k."""
    layers = decoder_layers(model, layers_path)
    judge = get_judge(cfg.judge)
    refusal_ids = refusal_token_ids(tokenizer)
    data = ablation_inputs(tok, prompts, split.eval, refusal_ids)
    settings = AblationSettings.from_config(cfg, judge)
    ev = Evaluator(model, layers, tokenizer, data, settings)
    base = ev.measure_baseline()
    total = len(data.harmful_texts)
    out = AblationOutcome(
        baseline_rate=base.refusal_rate,
        refused=len(base.refusals),
        refusals={split.eval["harmful"][i]: text for i, text in base.refusals.items()},
        judged=total,
    )
    if not refusal_to_remove(out.refused, total, cfg.refusal_threshold):
        reason = (
            f"no refusal behaviour to measure: {out.refused} of {total} held-out harmful prompts "
            f"refused, not clearly above the {100 * cfg.refusal_threshold:.0f} % at which "
            "refusal counts as removed"
        )
        out.absent.append(AbsentSection(section="ablation", reason=reason))
        return out
    n_points = len(layers) + 1
    r_dirs = torch.stack([analysis.tensors[f"refusal_direction.{p}"] for p in range(n_points)])
    window = parts.analysis_window(analysis.layers, cfg)
    fit_ev = Evaluator(
        model,
        layers,
        tokenizer,
        ablation_inputs(tok, prompts, split.fit, refusal_ids, "fit"),
        settings,
    )
    choice = select_layer(
        fit_ev, fit.child_s, fit.child_h, window, cfg.kl_budget, cfg.layer_bootstraps, cfg.seed
    )
    out.selected = _selected(choice, analysis, cfg, window)
    layer = out.selected.layer
    did = {p: analysis.tensors[f"did_singular_vectors.{p}"].double() for p in range(n_points)}
    out.section = ablation_curve(ev, layer, r_dirs[layer].double(), did[layer], judge.name)
    out.selected.candidates = _candidates(ev, choice, out.selected, out.section, r_dirs, did)
    out.samples = ev.samples  # the runner-ups' answers too: the digest covers every row
    out.section = out.section.model_copy(
        update={"samples_sha256": samples_sha256(ev.samples), "samples_count": len(ev.samples)}
    )
    return out


RUNNER_UP_K = 3  # the runner-ups' min_k is searched at most this far (each k: one generation)


def _selected(choice: LayerChoice, analysis: LayerAnalysis, cfg, window) -> SelectedLayer:
    """The SelectedLayer record: the rule that chose, its reason, the trials, stability."""
    if choice.chosen is not None:
        _, drop, kl, upper = next(t for t in choice.tried if t[0] == choice.chosen)
        selected = parts.select_by_ablation(choice.chosen, drop, kl, upper, window, cfg.kl_budget)
    else:  # no ablation lowered the refusal score: the norm-ratio rule decides
        selected = parts.select_by_norm(analysis.layers, cfg)
    trials = [
        LayerTrial(layer=la, drop=d, kl=k, kl_upper=u, chosen=la == selected.layer)
        for la, d, k, u in choice.tried
    ]
    return selected.model_copy(
        update={
            "trials": trials,
            "stability": choice.stability,
            "bootstraps": choice.bootstraps if choice.stability is not None else None,
        }
    )


def _candidates(ev, choice: LayerChoice, selected, section, r_dirs, did) -> list[LayerCandidate]:
    """The best layers of the fit with their numbers; a runner-up's coherent min_k is
    searched in order up to l*'s min_k (at most RUNNER_UP_K): is another layer cheaper?"""
    tried = {t[0]: t for t in choice.tried}
    layers = list(dict.fromkeys([selected.layer, *choice.candidates]))[: len(choice.candidates)]
    cap = min(section.min_k or RUNNER_UP_K, RUNNER_UP_K)
    out = []
    for layer in layers:
        if layer not in tried:
            continue
        _, drop, kl, upper = tried[layer]
        if layer == selected.layer:
            min_k, searched = section.min_k, max(p.k for p in section.curve if p.basis == "attack")
        else:
            min_k, searched = _runner_up_min_k(ev, layer, r_dirs[layer].double(), did[layer], cap)
        out.append(
            LayerCandidate(
                layer=layer, drop=drop, kl=kl, kl_upper=upper,
                resample_share=choice.shares.get(layer, 0.0), coherent_min_k=min_k,
                searched_to=searched, chosen=layer == selected.layer,
            )
        )  # fmt: skip
    return out


def _runner_up_min_k(ev, layer: int, r, did, cap: int) -> tuple[int | None, int]:
    """(coherent min_k or None, largest k judged) of the attack basis at `layer`, k ≤ cap."""
    attack = attack_basis(r, did)
    top = min(cap, attack.shape[0])
    for k in range(1, top + 1):
        point = ev.point("attack", k, attack[:k].T, generate=True, layer=layer)
        if coherent(point, ev.s.threshold, ev.s.max_broken_share):
            return k, k
    return None, top
