"""The audit orchestrator: prompts + models → captures → metrics → a validated AuditReport.

I/O lives here and in the CLI; everything it calls is a pure function of tensors. One model
is resident at a time: the child is captured and freed before the base is loaded.
"""

from __future__ import annotations

import gc
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from analysis import ANALYSIS_VERSION, __version__, git_revision
from analysis.capture import Activations, capture, suffix_token_count, tokenize_prompts
from analysis.crossdomain import cross_domain
from analysis.directions import layer_window, select_layer_by_norm
from analysis.layer_metrics import Captures, analyse_layers
from analysis.models import (
    ModelSpec,
    ResolvedModel,
    decoder_layers,
    load_model,
    num_parameters,
    resolve_model,
)
from analysis.pairing import (
    check_shapes,
    compare_vocab,
    load_tokenizer,
    model_shape,
    require_chat_template,
)
from analysis.stages import stage
from schemas.report import (
    AuditConfig,
    AuditReport,
    Environment,
    Headline,
    LayerMetrics,
    ModelRef,
    Models,
    PromptSetRef,
    SelectedLayer,
    StageTiming,
    TokenizerCheck,
    ToolInfo,
    Verdict,
)

log = logging.getLogger(__name__)

ModelLoader = Callable[[], nn.Module]


@dataclass(frozen=True)
class PromptInputs:
    """The prompt sets of one audit, already subsampled; `sizes` keeps the file counts."""

    harmful: object  # prompts.LoadedPromptSet
    harmless: object
    capability: object | None = None
    domains: tuple = ()

    def refs(self) -> list[PromptSetRef]:
        out = []
        for role, s in (
            [("harmful", self.harmful), ("harmless", self.harmless)]
            + [("capability", self.capability)] * (self.capability is not None)
            + [("domain", d) for d in self.domains]
        ):
            out.append(
                PromptSetRef(
                    role=role,
                    name=s.name,
                    version=s.version,
                    sha256=s.sha256,
                    count=getattr(s, "source_count", s.count),
                    used=s.count,
                )
            )
        return out


@dataclass
class AuditRun:
    """What an audit produced: the report and the tensors for directions.safetensors."""

    report: AuditReport
    tensors: dict[str, torch.Tensor]
    stages: list[StageTiming] = field(default_factory=list)


def _capture_model(
    load: ModelLoader,
    sets: dict[str, list[list[int]]],
    cfg: AuditConfig,
    pad_id: int,
    n_suffix: int,
    layers_path: str | None,
    name: str,
) -> tuple[dict[str, Activations], nn.Module | None]:
    model = load()
    layers = decoder_layers(model, layers_path)
    out = {}
    for key, ids in sets.items():
        n = n_suffix if key.endswith("chat") and cfg.position == "suffix" else 1
        out[key] = capture(
            model,
            layers,
            ids,
            pad_id=pad_id,
            batch_size=cfg.batch_size,
            n_suffix=n,
            desc=f"{name} {key}",
        )
    return out, model


def _free(model: nn.Module | None) -> None:
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def capture_all(
    *,
    load_child: ModelLoader,
    load_base: ModelLoader | None,
    tokenizer,
    prompts: PromptInputs,
    cfg: AuditConfig,
    layers_path: str | None = None,
    timings: list[StageTiming],
) -> tuple[Captures, int]:
    """Capture the child (chat: Ds, Dh), then the base (chat: Ds, Dh; raw: Ds)."""
    n_suffix = suffix_token_count(tokenizer, tokenizer)
    ids = {
        "harmful_chat": tokenize_prompts(prompts.harmful.texts, "chat", tokenizer, tokenizer),
        "harmless_chat": tokenize_prompts(prompts.harmless.texts, "chat", tokenizer, tokenizer),
        "harmful_raw": tokenize_prompts(prompts.harmful.texts, "raw", tokenizer, tokenizer),
    }
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chat_sets = {k: ids[k] for k in ("harmful_chat", "harmless_chat")}
    with stage("capture-child", timings):
        child, model = _capture_model(
            load_child, chat_sets, cfg, pad_id, n_suffix, layers_path, "child"
        )
        _free(model)
    if load_base is None:
        return Captures(child_s=child["harmful_chat"], child_h=child["harmless_chat"]), n_suffix
    with stage("capture-base", timings):
        base, model = _capture_model(load_base, ids, cfg, pad_id, n_suffix, layers_path, "base")
        _free(model)
    captures = Captures(
        child_s=child["harmful_chat"],
        child_h=child["harmless_chat"],
        base_s=base["harmful_chat"],
        base_raw_s=base["harmful_raw"],
        base_h=base["harmless_chat"],
    )
    return captures, n_suffix


def select_layer(layers: list[LayerMetrics], cfg: AuditConfig) -> SelectedLayer:
    """l* by the norm-ratio rule of DESIGN.md (the ablation rule arrives with ablation)."""
    window = layer_window(len(layers) - 1, cfg.layer_window)
    ratios = torch.tensor([m.norm_ratio for m in layers], dtype=torch.float64)
    chosen = select_layer_by_norm(ratios, window)
    reason = (
        f"largest ‖r_l‖ / mean activation norm ({ratios[chosen]:.3g}) among layers "
        f"{window[0]}..{window[1]}"
    )
    return SelectedLayer(layer=chosen, rule="norm-ratio", window=window, reason=reason)


def headline(layers: list[LayerMetrics], chosen: SelectedLayer, cfg: AuditConfig) -> Headline:
    """The card's numbers at l*."""
    m, eps = layers[chosen.layer], cfg.headline_eps
    ranks = m.ranks
    return Headline(
        layer=chosen.layer,
        eps=eps,
        rho_eps_aligned=ranks["aligned"].rho(eps) if "aligned" in ranks else None,
        rank_aligned=_rank_at(ranks.get("aligned"), eps),
        rho_eps_naive=ranks["naive"].rho(eps) if "naive" in ranks else None,
        rho_eps_contrast=ranks["child_contrast"].rho(eps) if "child_contrast" in ranks else None,
        refusal_direction_recovery=m.recovery_cosine,
        safety_specificity=m.safety_specificity,
    )


def _rank_at(stats, eps: float) -> int | None:
    if stats is None:
        return None
    return next(r.rank for r in stats.uncentered if abs(r.eps - eps) < 1e-12)


def verdict(layers: list[LayerMetrics], paired: bool) -> Verdict:
    """Overall outcome in one sentence."""
    if paired and all(m.models_identical for m in layers):
        return Verdict(
            code="identical-models",
            text="The base and child produce identical activations on every prompt at every "
            "layer: instruction tuning changed nothing this audit can see.",
        )
    if not paired:
        return Verdict(
            code="partial",
            text="Child-only audit: no public base model, so alignment-shift ranks are absent.",
        )
    return Verdict(code="measured", text="Alignment shift measured at every layer.")


def environment(device: str) -> Environment:
    import transformers

    return Environment(
        device=device,
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        platform=f"{platform.system()} {platform.machine()}",
    )


def tool_info() -> ToolInfo:
    return ToolInfo(
        version=__version__, git_revision=git_revision(), analysis_version=ANALYSIS_VERSION
    )


def audit_key(base: ModelRef | None, child: ModelRef) -> str:
    """`base sha / child sha / analysis version` (content hashes for local folders)."""

    def ident(ref: ModelRef | None) -> str:
        if ref is None:
            return "none"
        return ref.revision if ref.source == "hub" else f"sha256:{ref.content_sha256[:16]}"

    return f"{ident(base)}/{ident(child)}/{ANALYSIS_VERSION}"


def assemble_report(
    *,
    captures: Captures,
    prompts: PromptInputs,
    cfg: AuditConfig,
    models: Models,
    tokenizer_check: TokenizerCheck,
    device: str,
    timings: list[StageTiming],
    warnings: list[str],
) -> AuditRun:
    """Metrics from captures, then the validated report."""
    with stage("spectra", timings):
        analysis = analyse_layers(
            captures, tuple(cfg.eps), cfg.headline_eps, cfg.num_directions, cfg.zero_tolerance
        )
        chosen = select_layer(analysis.layers, cfg)
        domains = cross_domain(captures, prompts.harmful, chosen.layer, cfg.cross_domain_k)
    absent = [dict(section=s, reason=_PENDING) for s in ("modes", "depth", "ablation")]
    absent.append(dict(section="fragility", reason=_PENDING))
    if not captures.paired:
        absent.insert(0, dict(section="alignment-shift ranks", reason="no base model given"))
    report = AuditReport(
        tool=tool_info(),
        created_at=datetime.now(UTC),
        audit_key=audit_key(models.base, models.child),
        kind="pair" if captures.paired else "child-only",
        models=models,
        tokenizer=tokenizer_check,
        prompt_sets=prompts.refs(),
        config=cfg,
        environment=environment(device),
        stages=list(timings),
        layers=analysis.layers,
        selected_layer=chosen,
        headline=headline(analysis.layers, chosen, cfg),
        cross_domain=domains.section,
        verdict=verdict(analysis.layers, captures.paired),
        absent=absent + domains.absent,
        warnings=warnings + analysis.warnings + domains.warnings,
    )
    return AuditRun(report=report, tensors=analysis.tensors, stages=timings)


_PENDING = "not computed by this version of depthcard"
DEMO_DIR = Path(__file__).with_name("calibration")


def model_ref(role: str, resolved: ResolvedModel, model: nn.Module, dtype: str) -> ModelRef:
    """Exact identity and shape of a loaded model."""
    shape = model_shape(resolved)
    return ModelRef(
        role=role,
        source=resolved.source,
        repo_id=resolved.repo_id,
        revision=resolved.revision,
        path=str(resolved.folder) if resolved.source == "local" else None,
        content_sha256=resolved.content_sha256,
        architecture=shape.architecture,
        num_parameters=num_parameters(model),
        dtype=dtype,
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        vocab_size=shape.vocab_size,
    )


def _loader(role: str, resolved: ResolvedModel, cfg: AuditConfig, refs: dict) -> ModelLoader:
    def load() -> nn.Module:
        model = load_model(resolved.folder, cfg.device, cfg.dtype)
        refs[role] = model_ref(role, resolved, model, cfg.dtype)
        return model

    return load


def run_audit(
    *,
    base: ModelSpec | None,
    child: ModelSpec,
    prompts: PromptInputs,
    cfg: AuditConfig,
    layers_path: str | None = None,
    token: str | None = None,
) -> AuditRun:
    """Resolve, check and capture both models, then assemble the validated report.

    Raises:
        ModelLoadError: a model that is missing, unsafe, or not a matched pair.
    """
    timings: list[StageTiming] = []
    warnings: list[str] = []
    with stage("resolve", timings):
        child_res = resolve_model(child, token)
        base_res = resolve_model(base, token) if base is not None else None
        if base_res is not None:
            check_shapes(base_res, child_res)
        tokenizer = load_tokenizer(child_res.folder)
        require_chat_template(tokenizer, child_res.folder)
        check = _tokenizer_check(base_res, tokenizer, warnings)
    refs: dict[str, ModelRef] = {}
    captures, n_suffix = capture_all(
        load_child=_loader("child", child_res, cfg, refs),
        load_base=None if base_res is None else _loader("base", base_res, cfg, refs),
        tokenizer=tokenizer,
        prompts=prompts,
        cfg=cfg,
        layers_path=layers_path,
        timings=timings,
    )
    device = _device_name(cfg.device)
    return assemble_report(
        captures=captures,
        prompts=prompts,
        cfg=cfg,
        models=Models(base=refs.get("base"), child=refs["child"]),
        tokenizer_check=check.model_copy(update={"suffix_tokens": n_suffix}),
        device=device,
        timings=timings,
        warnings=warnings,
    )


def _tokenizer_check(base_res, tokenizer, warnings: list[str]) -> TokenizerCheck:
    if base_res is None:
        return TokenizerCheck(suffix_tokens=1)
    base_tok = load_tokenizer(base_res.folder)
    equal, knows, notes = compare_vocab(base_tok, tokenizer)
    warnings.extend(notes)
    return TokenizerCheck(
        vocab_equal=equal,
        base_has_chat_template=bool(getattr(base_tok, "chat_template", None)),
        base_knows_template_tokens=knows,
        suffix_tokens=1,
    )


def _device_name(requested: str) -> str:
    if requested == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)"
