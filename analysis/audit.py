"""The audit orchestrator: prompts + models → captures → metrics → a validated AuditReport.

I/O lives here and in the CLI; everything it calls is a pure function of tensors, except
the ablation stage, which needs the child's forward pass. One model is resident at a time:
the base is captured and freed, then the child is captured and kept for the ablation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from depthcard.analysis import report_parts as parts
from depthcard.analysis.ablation_stage import AblationOutcome, ablation_stage
from depthcard.analysis.capture import capture_sets, free_model
from depthcard.analysis.crossdomain import cross_domain
from depthcard.analysis.depth_stage import alignment_depth, mode_catalogue
from depthcard.analysis.erosion_stage import (
    erosion_probe,
    erosion_section,
    joint_logprob,
    third_pass,
)
from depthcard.analysis.fragility_stage import fragility_stage
from depthcard.analysis.judges import get_judge
from depthcard.analysis.layer_metrics import Captures, LayerAnalysis, analyse_layers
from depthcard.analysis.models import (
    ModelLoadError,
    ModelSpec,
    ResolvedModel,
    load_model,
    resolve_model,
)
from depthcard.analysis.pairing import (
    check_shapes,
    check_third,
    load_tokenizer,
    model_shape,
    require_chat_template,
    tokenizer_facts,
)
from depthcard.analysis.prompt_inputs import PromptInputs, tokenize_inputs
from depthcard.analysis.stages import stage
from depthcard.schemas.report import (
    AbsentSection,
    AuditConfig,
    AuditReport,
    ModelRef,
    Models,
    StageTiming,
    TokenizerCheck,
)
from depthcard.schemas.sections import Erosion, Fragility

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).with_name("calibration")
NO_THIRD = "no third model (a fine-tune of the child) given"
FRAGILITY_OFF = "disabled in the audit settings (fragility = none)"


@dataclass(frozen=True)
class ModelHandle:
    """How to load one model, and how to describe it once loaded."""

    load: Callable[[], nn.Module]
    describe: Callable[[nn.Module], ModelRef]


@dataclass
class AuditRun:
    """What an audit produced: the report and the tensors for directions.safetensors."""

    report: AuditReport
    tensors: dict[str, torch.Tensor]


@dataclass
class StageOutputs:
    """What the measuring stages produced, for `_assemble` to turn into a report."""

    captures: Captures
    analysis: LayerAnalysis
    ablation: AblationOutcome
    fragility: Fragility | AbsentSection
    erosion: Erosion | AbsentSection
    models: dict[str, ModelRef]  # role ("base", "child", "third") → reference
    tokenizer_check: TokenizerCheck
    timings: list[StageTiming]  # the modes-depth stage is appended while assembling


def audit_models(
    *,
    base: ModelHandle | None,
    child: ModelHandle,
    tokenizer,
    prompts: PromptInputs,
    cfg: AuditConfig,
    tokenizer_check: TokenizerCheck | None = None,
    layers_path: str | None = None,
    timings: list[StageTiming] | None = None,
    warnings: list[str] | None = None,
    third: ModelHandle | None = None,
) -> AuditRun:
    """Run every stage on loadable models; the in-process entry point (tests use it).

    With `third` (a fine-tune of the child; needs `base`), F is loaded between the base and
    the child, captured on Ds in chat format and scored for the erosion analyses.
    """
    timings = [] if timings is None else timings
    warnings = [] if warnings is None else list(warnings)
    if third is not None and base is None:
        raise ValueError("a three-model audit needs the base model (erosion is measured from it)")
    tok = tokenize_inputs(prompts, tokenizer)
    probe = erosion_probe(tok, tokenizer) if third is not None else None
    refs: dict[str, ModelRef] = {}
    logprobs: dict[str, float] = {}
    base_acts = _capture_base(base, tok, cfg, layers_path, timings, refs, probe, logprobs)
    third_run = None
    if third is not None:
        with stage("capture-third", timings):
            context = (tokenizer, prompts.harmful.texts, layers_path)
            third_run = third_pass(third, probe, tok, cfg, context)
        refs["third"] = third_run.ref
    with stage("capture-child", timings):
        child_model = child.load()
        refs["child"] = child.describe(child_model)
        keys = ("harmful_chat", "harmless_chat", "capability_chat")
        child_acts = capture_sets(child_model, keys, tok, cfg, layers_path, "child")
        if probe is not None:
            logprobs["child"] = joint_logprob(child_model, probe, cfg.batch_size)
    captures = Captures(
        child_s=child_acts["harmful_chat"],
        child_h=child_acts["harmless_chat"],
        child_c=child_acts.get("capability_chat"),
        base_s=base_acts.get("harmful_chat"),
        base_raw_s=base_acts.get("harmful_raw"),
        base_h=base_acts.get("harmless_chat"),
        base_c=base_acts.get("capability_chat"),
        third_s=None if third_run is None else third_run.harmful_chat,
    )
    with stage("spectra", timings):
        analysis = analyse_layers(
            captures, tuple(cfg.eps), cfg.headline_eps, cfg.num_directions, cfg.zero_tolerance
        )
    outcome = AblationOutcome(absent=[AbsentSection(section="ablation", reason="disabled")])
    if cfg.ablation:
        with stage("ablation", timings):
            outcome = ablation_stage(
                child_model, tokenizer, tok, prompts, analysis, cfg, layers_path
            )
    fragile = _fragility(child_model, tokenizer, tok, outcome, cfg, layers_path, timings)
    free_model(child_model)
    check = (tokenizer_check or TokenizerCheck(suffix_tokens=1)).model_copy(
        update={"suffix_tokens": tok.n_suffix}
    )
    outputs = StageOutputs(
        captures=captures,
        analysis=analysis,
        ablation=outcome,
        fragility=fragile,
        erosion=_erosion(third_run, logprobs, probe, analysis, cfg, outcome.baseline_rate),
        models=refs,
        tokenizer_check=check,
        timings=timings,
    )
    return _assemble(outputs, prompts, cfg, warnings)


def _capture_base(base, tok, cfg, layers_path, timings, refs, probe, logprobs):
    """The base's activations (and its reference log-prob when a third model is audited)."""
    if base is None:
        return {}
    with stage("capture-base", timings):
        model = base.load()
        refs["base"] = base.describe(model)
        keys = ("harmful_chat", "harmless_chat", "harmful_raw", "capability_chat")
        acts = capture_sets(model, keys, tok, cfg, layers_path, "base")
        if probe is not None:
            logprobs["base"] = joint_logprob(model, probe, cfg.batch_size)
        free_model(model)
    return acts


def _erosion(third_run, logprobs, probe, analysis: LayerAnalysis, cfg: AuditConfig, rate):
    """The Erosion section, or the AbsentSection saying there is no third model."""
    if third_run is None:
        return AbsentSection(section="erosion", reason=NO_THIRD)
    window = parts.analysis_window(analysis.layers, cfg)
    child_rate = (rate, cfg.judge)
    return erosion_section(third_run, logprobs, probe, analysis.layers, window, child_rate)


def _fragility(model, tokenizer, tok, outcome: AblationOutcome, cfg, layers_path, timings):
    """The Fragility section, or the AbsentSection saying why there is none."""
    if cfg.fragility is None:
        return AbsentSection(section="fragility", reason=FRAGILITY_OFF)
    if not cfg.ablation:
        why = "needs the child's own refusals, which the ablation stage generates (disabled)"
        return AbsentSection(section="fragility", reason=why)
    if outcome.section is None:
        reason = next((a.reason for a in outcome.absent if a.section == "ablation"), None)
        return AbsentSection(section="fragility", reason=reason or "no refusals to score")
    with stage("fragility", timings):
        section, why = fragility_stage(
            model, tokenizer, tok, outcome.refusals, cfg.fragility, layers_path
        )
    return section or AbsentSection(section="fragility", reason=why)


def _assemble(
    out: StageOutputs, prompts: PromptInputs, cfg: AuditConfig, warnings: list[str]
) -> AuditRun:
    """The validated report from the stage outputs, after the modes and depth stage."""
    captures, analysis, outcome = out.captures, out.analysis, out.ablation
    with stage("modes-depth", out.timings):
        selected = outcome.selected or parts.select_by_norm(analysis.layers, cfg)
        domains = cross_domain(captures, prompts.harmful, selected.layer, cfg.cross_domain_k)
        catalogue = mode_catalogue(captures, cfg.mode_k, cfg.tau_species, cfg.tau_match)
        depth, no_depth = _depth(out, cfg)
    erosion = None if isinstance(out.erosion, AbsentSection) else out.erosion
    fragility = None if isinstance(out.fragility, AbsentSection) else out.fragility
    absent = list(outcome.absent) + [AbsentSection(**a) for a in domains.absent]
    absent += [a for a in (no_depth, out.fragility, out.erosion) if isinstance(a, AbsentSection)]
    if not captures.paired:
        reason = "no base model given (child-only audit)"
        absent.insert(0, AbsentSection(section="alignment-shift ranks", reason=reason))
    refs = out.models
    report = AuditReport(
        tool=parts.tool_info(),
        created_at=datetime.now(UTC),
        audit_key=parts.audit_key(refs.get("base"), refs["child"], refs.get("third")),
        kind="three-model" if erosion else "pair" if captures.paired else "child-only",
        models=Models(base=refs.get("base"), child=refs["child"], third=refs.get("third")),
        tokenizer=out.tokenizer_check,
        prompt_sets=prompts.refs(),
        config=cfg,
        environment=parts.environment(parts.device_name(cfg.device)),
        stages=list(out.timings),
        layers=analysis.layers,
        selected_layer=selected,
        headline=parts.headline(
            analysis.layers, selected, cfg, depth, outcome.section, outcome.baseline_rate
        ).model_copy(update={"alignment_kept": erosion.kept_fraction if erosion else None}),
        cross_domain=domains.section,
        modes=catalogue,
        depth=depth,
        ablation=outcome.section,
        fragility=fragility,
        erosion=erosion,
        verdict=parts.verdict(
            analysis.layers,
            captures.paired,
            outcome.refused,
            len(prompts.harmful.texts),
            cfg.refusal_threshold,
        ),
        absent=absent,
        warnings=warnings + analysis.warnings + domains.warnings,
    )
    return AuditRun(report=report, tensors=analysis.tensors)


def _depth(out: StageOutputs, cfg: AuditConfig):
    """The depth score, or None and the AbsentSection saying why there is none."""
    outcome = out.ablation
    if outcome.section is None and outcome.baseline_rate is not None:
        return None, AbsentSection(section="depth", reason=outcome.absent[0].reason)
    if out.captures.child_c is None:
        return None, AbsentSection(section="depth", reason="no capability prompt set")
    window = parts.analysis_window(out.analysis.layers, cfg)
    return alignment_depth(out.captures, window, cfg.capability_k), None


def _handle(role: str, resolved: ResolvedModel, cfg: AuditConfig) -> ModelHandle:
    return ModelHandle(
        load=lambda: load_model(resolved.folder, cfg.device, cfg.dtype),
        describe=lambda model: parts.model_ref(role, resolved, model, cfg.dtype),
    )


def run_audit(
    *,
    base: ModelSpec | None,
    child: ModelSpec,
    prompts: PromptInputs,
    cfg: AuditConfig,
    layers_path: str | None = None,
    token: str | None = None,
    third: ModelSpec | None = None,
) -> AuditRun:
    """Resolve and check the models, then run every stage (`third`: a fine-tune of the child).

    Raises:
        ModelLoadError: a model that is missing, unsafe, or not a matched pair.
        ValueError: settings that cannot work with these models (e.g. K above the rank cap).
    """
    timings: list[StageTiming] = []
    warnings: list[str] = []
    get_judge(cfg.judge)  # an unknown judge fails before any model is loaded
    with stage("resolve", timings):
        child_res = resolve_model(child, token)
        base_res = resolve_model(base, token) if base is not None else None
        if base_res is not None:
            check_shapes(base_res, child_res)
        _check_directions(cfg, prompts, model_shape(child_res).hidden_size)
        tokenizer = load_tokenizer(child_res.folder)
        require_chat_template(tokenizer, child_res.folder)
        check = tokenizer_facts(base_res, tokenizer, warnings)
        third_res = None if third is None else resolve_model(third, token)
        if third_res is not None:
            warnings += check_third(third_res, child_res, tokenizer)
    return audit_models(
        base=None if base_res is None else _handle("base", base_res, cfg),
        child=_handle("child", child_res, cfg),
        tokenizer=tokenizer,
        prompts=prompts,
        cfg=cfg,
        tokenizer_check=check,
        layers_path=layers_path,
        timings=timings,
        warnings=warnings,
        third=None if third_res is None else _handle("third", third_res, cfg),
    )


def _check_directions(cfg: AuditConfig, prompts: PromptInputs, d: int) -> None:
    cap = min(len(prompts.harmful.texts), d)
    if cfg.num_directions > cap:
        raise ValueError(
            f"K = {cfg.num_directions} directions (num_directions) exceeds the largest possible "
            "rank of M_DiD, "
            f"min(harmful prompts {len(prompts.harmful.texts)}, d_model {d}) = {cap}"
        )


__all__ = [
    "AuditRun",
    "ModelHandle",
    "ModelLoadError",
    "PromptInputs",
    "audit_models",
    "run_audit",
    "DEMO_DIR",
]
