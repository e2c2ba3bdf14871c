"""The audit orchestrator: prompts + models → captures → metrics → a validated AuditReport.

I/O lives here and in the CLI; everything it calls is a pure function of tensors, except
the ablation stage, which needs the child's forward pass. One model is resident at a time:
the base is captured and freed, then the child is captured and kept for the ablation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from depthcard.analysis import report_parts as parts
from depthcard.analysis.ablation_stage import AblationOutcome, ablation_stage
from depthcard.analysis.capture import capture_sets, free_model, halving_on_oom
from depthcard.analysis.crossdomain import cross_domain
from depthcard.analysis.depth_stage import alignment_depth, mode_catalogue
from depthcard.analysis.dtype_choice import fixed_choice, measure_cpu_dtype
from depthcard.analysis.erosion_stage import (
    erosion_probe,
    erosion_section,
    joint_logprob,
    third_pass,
)
from depthcard.analysis.fragility_stage import fragility_stage
from depthcard.analysis.judges import get_judge, wilson_interval
from depthcard.analysis.layer_metrics import Captures, LayerAnalysis, analyse_layers
from depthcard.analysis.models import (
    ModelLoadError,
    ModelSpec,
    ResolvedModel,
    load_model,
    resolve_model,
)
from depthcard.analysis.nulls import (
    depth_inputs,
    depth_interval,
    depth_null,
    point_nulls,
    spectral_nulls,
    typical_domain_rows,
)
from depthcard.analysis.pairing import (
    check_shapes,
    check_third,
    load_tokenizer,
    model_shape,
    require_chat_template,
    tokenizer_facts,
)
from depthcard.analysis.progress import watch
from depthcard.analysis.prompt_inputs import (
    HeldOutSplit,
    PromptInputs,
    check_num_directions,
    held_out_split,
    tokenize_inputs,
)
from depthcard.analysis.stages import stage
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import (
    DIRECTIONS_FILE,
    SCHEMA_VERSION,
    AbsentSection,
    AuditConfig,
    AuditReport,
    DtypeChoice,
    Headline,
    HeldOut,
    ModelRef,
    Models,
    StageTiming,
    TokenizerCheck,
)
from depthcard.schemas.sections import Erosion, Fragility, JudgedAnswer

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).with_name("calibration")
# Which prompts each number read (report.held_out.used; docs/metrics.md, "Held-out evaluation").
PROMPTS_USED = {
    "ranks, norms, specificity, projections": "all",
    "refusal directions, DiD singular vectors, recovery": "fit",
    "selected_layer": "fit",
    "ablation (baseline, curve, min_k, KL, ΔCE)": "eval",
    "baseline refusal rate, fragility refusals": "eval",
    "depth score and its null": "all",
    "modes, cross-domain": "all",
    "erosion curves, compliance log-probs, gradient cosine": "all",
    "erosion refusal rates (child and fine-tune)": "eval",
}
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
    samples: list[JudgedAnswer] = field(default_factory=list)  # rows of samples.jsonl


@dataclass
class StageOutputs:
    """What the measuring stages produced, for `_assemble` to turn into a report."""

    captures: Captures
    split: HeldOutSplit
    analysis: LayerAnalysis
    ablation: AblationOutcome
    fragility: Fragility | AbsentSection
    erosion: Erosion | AbsentSection
    models: dict[str, ModelRef]  # role ("base", "child", "third") → reference
    tokenizer_check: TokenizerCheck
    timings: list[StageTiming]  # the modes-depth stage is appended while assembling
    dtype_choice: DtypeChoice


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
    dtype_choice: DtypeChoice | None = None,
) -> AuditRun:
    """Run every stage on loadable models; the in-process entry point (tests use it).

    With `third` (a fine-tune of the child; needs `base`), F is loaded between the base and
    the child, captured on Ds in chat format and scored for the erosion analyses.
    `dtype_choice` records how `cfg.dtype` was chosen (default: requested).
    """
    if cfg.dtype is None:
        raise ValueError("audit_models needs a concrete dtype (AuditConfig.with_concrete_dtype)")
    if cfg.early_stop:
        raise UserError(
            "early_stop is no longer supported: every answer is generated and stored in full"
        )
    dtype_choice = dtype_choice or fixed_choice(cfg.dtype, requested=True)
    timings = [] if timings is None else timings
    warnings = [] if warnings is None else list(warnings)
    if third is not None and base is None:
        raise ValueError("a three-model audit needs the base model (erosion is measured from it)")
    split = held_out_split(prompts, cfg.eval_fraction, cfg.seed)
    tok = tokenize_inputs(prompts, tokenizer)
    domain_keys = tuple(f"domain{i}_chat" for i in range(len(prompts.domains)))
    probe = erosion_probe(tok, tokenizer) if third is not None else None
    refs: dict[str, ModelRef] = {}
    logprobs: dict[str, float] = {}
    base_acts = _capture_base(
        base, tok, cfg, layers_path, timings, refs, probe, logprobs, domain_keys
    )
    third_run = None
    if third is not None:
        with stage("capture-third", timings):
            # the fine-tune's refusal rate reads the same held-out prompts as the child's
            eval_texts = [prompts.harmful.texts[i] for i in split.eval["harmful"]]
            context = (tokenizer, eval_texts, layers_path)
            third_run = third_pass(third, probe, tok, cfg, context)
        refs["third"] = third_run.ref
    with stage("capture-child", timings):
        child_model = watch(child.load())
        refs["child"] = child.describe(child_model)
        keys = ("harmful_chat", "harmless_chat", "capability_chat", *domain_keys)
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
        child_domains=tuple(child_acts[k] for k in domain_keys),
        base_domains=tuple(base_acts[k] for k in domain_keys if k in base_acts),
    )
    with stage("spectra", timings):
        analysis = analyse_layers(
            captures,
            tuple(cfg.eps),
            cfg.headline_eps,
            cfg.num_directions,
            cfg.zero_tolerance,
            fit=captures.take(split.fit),
        )
    outcome = AblationOutcome(absent=[AbsentSection(section="ablation", reason="disabled")])
    if cfg.ablation:
        with stage("ablation", timings):
            outcome, cfg = halving_on_oom(
                lambda c: ablation_stage(
                    child_model,
                    tokenizer,
                    tok,
                    prompts,
                    analysis,
                    c,
                    layers_path,
                    split,
                    captures.take(split.fit),
                ),
                cfg,
            )
    fragile = _fragility(child_model, tokenizer, tok, outcome, cfg, layers_path, timings)
    free_model(child_model)
    check = (tokenizer_check or TokenizerCheck(suffix_tokens=1)).model_copy(
        update={"suffix_tokens": tok.n_suffix}
    )
    outputs = StageOutputs(
        captures=captures,
        split=split,
        analysis=analysis,
        ablation=outcome,
        fragility=fragile,
        erosion=_erosion(third_run, logprobs, probe, analysis, cfg, outcome.baseline_rate),
        models=refs,
        tokenizer_check=check,
        timings=timings,
        dtype_choice=dtype_choice,
    )
    return _assemble(outputs, prompts, cfg, warnings)


def _capture_base(base, tok, cfg, layers_path, timings, refs, probe, logprobs, domain_keys):
    """The base's activations (and its reference log-prob when a third model is audited)."""
    if base is None:
        return {}
    with stage("capture-base", timings):
        model = watch(base.load())
        refs["base"] = base.describe(model)
        keys = ("harmful_chat", "harmless_chat", "harmful_raw", "capability_chat", *domain_keys)
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
        selected = None if outcome.selected is None else outcome.selected.layer
        section, why = fragility_stage(
            model, tokenizer, tok, outcome.refusals, cfg.fragility, layers_path, selected
        )
    return section or AbsentSection(section="fragility", reason=why)


def _assemble(
    out: StageOutputs, prompts: PromptInputs, cfg: AuditConfig, warnings: list[str]
) -> AuditRun:
    """The validated report from the stage outputs, after the modes and depth stage."""
    captures, analysis, outcome = out.captures, out.analysis, out.ablation
    erosion = None if isinstance(out.erosion, AbsentSection) else out.erosion
    with stage("modes-depth", out.timings):
        selected = outcome.selected or parts.select_by_norm(analysis.layers, cfg)
        catalogue = mode_catalogue(captures, cfg.mode_k, cfg.tau_species, cfg.tau_match)
        depth, no_depth = _depth(out, cfg)
    with stage("nulls", out.timings):
        rows = typical_domain_rows(list(prompts.harmful.categories), captures)
        null_fields, placebo = _null_fields(out, cfg, selected.layer, depth, rows)
        domains = cross_domain(
            captures,
            prompts.harmful,
            selected.layer,
            cfg.cross_domain_k,
            prompts.domains,
            placebo,
        )
        if domains.section is not None:
            domains.section = domains.section.model_copy(update={"placebo_rows": rows})
    headline = parts.headline(
        analysis.layers, selected, cfg, depth, outcome.section, outcome.baseline_rate
    )
    if outcome.judged:
        low, high = wilson_interval(outcome.refused, outcome.judged)
        null_fields.update(baseline_refusal_low=low, baseline_refusal_high=high)
    null_fields["alignment_kept"] = erosion.kept_fraction if erosion else None
    fragility = None if isinstance(out.fragility, AbsentSection) else out.fragility
    absent = list(outcome.absent) + [AbsentSection(**a) for a in domains.absent]
    absent += [a for a in (no_depth, out.fragility, out.erosion) if isinstance(a, AbsentSection)]
    if not captures.paired:
        reason = "no base model given (child-only audit)"
        absent.insert(0, AbsentSection(section="alignment-shift ranks", reason=reason))
    refs = out.models
    report = AuditReport(
        schema_version=SCHEMA_VERSION,
        directions_file=DIRECTIONS_FILE,
        tool=parts.tool_info(),
        created_at=datetime.now(UTC),
        audit_key=parts.audit_key(refs.get("base"), refs["child"], refs.get("third")),
        kind="three-model" if erosion else "pair" if captures.paired else "child-only",
        models=Models(base=refs.get("base"), child=refs["child"], third=refs.get("third")),
        tokenizer=out.tokenizer_check,
        prompt_sets=prompts.refs(),
        config=cfg,
        environment=parts.environment(parts.device_name(cfg.device)),
        dtype_choice=out.dtype_choice,
        stages=list(out.timings),
        layers=analysis.layers,
        selected_layer=selected,
        held_out=HeldOut(
            eval_fraction=cfg.eval_fraction,
            seed=cfg.seed,
            sets=out.split.records(prompts),
            used=PROMPTS_USED,
        ),
        headline=Headline.model_validate(headline.model_dump() | null_fields),
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
            outcome.judged or len(prompts.harmful.texts),
            cfg.refusal_threshold,
        ),
        absent=absent,
        warnings=warnings + analysis.warnings + domains.warnings,
    )
    return AuditRun(report=report, tensors=analysis.tensors, samples=outcome.samples)


def _null_fields(out: StageOutputs, cfg: AuditConfig, point: int, depth, domain_rows=None):
    """Headline fields of the placebos, nulls, baselines and bootstrap intervals; the
    cross-domain placebo (groups of `domain_rows`). All from the captures: no forward pass."""
    c, m = out.captures, out.analysis.layers[point]
    pn = point_nulls(
        c,
        c.take(out.split.fit),
        point,
        eps=cfg.headline_eps,
        scale=m.activation_norm,
        tolerance=cfg.zero_tolerance,
        k_domain=cfg.cross_domain_k,
        bootstraps=cfg.bootstraps,
        seed=cfg.seed,
        domain_rows=domain_rows,
    )
    did = m.ranks.get("did") or m.ranks.get("child_contrast")
    rec = m.recovery_cosine
    fields = dict(
        rho_eps_did=None if did is None else did.rho(cfg.headline_eps),
        recovery_placebo=pn.recovery_placebo,
        recovery_baseline=pn.recovery_baseline,
        null_permutations=cfg.permutations,
    )
    if rec is not None and pn.recovery_baseline is not None:
        fields["recovery_beyond_baseline"] = rec - pn.recovery_baseline
    if pn.recovery_interval is not None:
        fields["recovery_low"], fields["recovery_high"] = pn.recovery_interval
    if pn.recovery_beyond_interval is not None:
        fields["recovery_beyond_low"], fields["recovery_beyond_high"] = pn.recovery_beyond_interval
    did_null, spec_null = spectral_nulls(
        c, point, eps=cfg.headline_eps, scale=m.activation_norm, tolerance=cfg.zero_tolerance,
        permutations=cfg.permutations, bootstraps=cfg.bootstraps, seed=cfg.seed,
    )  # fmt: skip
    if did_null is not None:
        fields.update(rho_did_null_mean=did_null.mean, rho_did_null_p=did_null.p_value)
        if did_null.interval is not None:
            fields["rho_did_beyond_low"], fields["rho_did_beyond_high"] = did_null.interval
    if spec_null is not None and m.safety_specificity is not None:
        fields.update(specificity_null_mean=spec_null.mean, specificity_null_p=spec_null.p_value)
        if spec_null.interval is not None:
            fields["specificity_low"], fields["specificity_high"] = spec_null.interval
    if depth is not None:
        window = parts.analysis_window(out.analysis.layers, cfg)
        inp = depth_inputs(c, window, cfg.capability_k)
        null = depth_null(inp, depth.score, cfg.permutations, cfg.seed)
        fields.update(
            depth_window=window,
            depth_null_mean=null.mean,
            depth_null_p95=null.p95,
            depth_p_value=null.p_value,
            depth_vs_null=null.vs_null,
            depth_above_null=null.above,
        )
        fields["depth_low"], fields["depth_high"] = depth_interval(inp, cfg.bootstraps, cfg.seed)
    return fields, pn.cross_domain_placebo


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
        UserError: settings that cannot work with these models (e.g. K above the rank cap).
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
    cfg, choice = _concrete_dtype(cfg, child_res, tokenizer, prompts, timings)
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
        dtype_choice=choice,
    )


def _concrete_dtype(cfg: AuditConfig, child: ResolvedModel, tokenizer, prompts, timings):
    """`cfg` with its dtype and batch size fixed, and how the dtype was chosen: as set, auto
    on a GPU (bfloat16), or auto on a CPU, measured on the child's first batch."""
    gpu = torch.cuda.is_available() and cfg.device != "cpu"
    if cfg.dtype is not None or gpu:
        requested = cfg.dtype is not None
        cfg = cfg.with_concrete_dtype(gpu)
        return cfg, fixed_choice(cfg.dtype, requested=requested)
    with stage("dtype", timings):
        tok = tokenize_inputs(prompts, tokenizer)
        model = load_model(child.folder, cfg.device, "float32")
        choice = measure_cpu_dtype(
            model, tok.ids["harmful_chat"], tok.pad_id, cfg.bf16_kl_tolerance
        )
        free_model(model)
    log.info("dtype: %s (%s)", choice.dtype, choice.reason)
    return cfg.with_concrete_dtype(False, cpu_dtype=choice.dtype), choice


def _check_directions(cfg: AuditConfig, prompts: PromptInputs, d: int) -> None:
    fit = len(held_out_split(prompts, cfg.eval_fraction, cfg.seed).fit["harmful"])
    check_num_directions(cfg.num_directions, fit, d)


__all__ = [
    "AuditRun",
    "ModelHandle",
    "ModelLoadError",
    "PromptInputs",
    "audit_models",
    "run_audit",
    "DEMO_DIR",
]
