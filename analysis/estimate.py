"""A dry estimate of an audit: config.json and the prompts in, an `AuditEstimate` out.

The I/O edge of `depthcard estimate` and of the bot's flavour choice. It reads config.json
(from a local folder, or from the Hub with `hf_hub_download` of that one file) and, when
the child is a local folder with a tokenizer, the tokenizer; never the weights, and it runs
no forward pass. The counting is `work_plan`, the minutes `job_time`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from depthcard.analysis.job_time import (
    FLAVOURS,
    choose_flavour,
    flavour_estimate,
    job_timeout_minutes,
)
from depthcard.analysis.prompt_inputs import PromptInputs, check_num_directions, held_out_split
from depthcard.analysis.work_plan import PromptLengths, model_size, plan_totals, work_plan
from depthcard.schemas.errors import UserError
from depthcard.schemas.estimate import AuditEstimate, ModelSize, SetTokens
from depthcard.schemas.report import AuditConfig

log = logging.getLogger(__name__)

TOKENS_PER_WORD = 1.3
CHAT_TEMPLATE_TOKENS = 20  # a chat template's tokens around one user turn, when not counted
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_SPLIT_KEYS = {"harmful": "harmful_chat", "harmless": "harmless_chat"}
NOTES = (
    "generation is counted as an upper bound: every row runs max_new_tokens (the audit stops "
    "a row once it is a refusal)",
    "fragility assumes every held-out harmful prompt is refused and the power iteration runs "
    "to its cap",
    "a child that refuses less than refusal_threshold ends the ablation after its baseline "
    "and skips fragility: less work than counted",
    "stages without a forward pass (spectra, modes, nulls) are not counted: seconds",
    "GPU minutes are predictions from datasheet numbers, not measurements (docs/estimate.md)",
)


def flavour_rows(names: list[str]):
    """The `FLAVOURS` rows for `names`.

    Raises:
        UserError: a name the table does not know.
    """
    unknown = [n for n in names if n not in FLAVOURS]
    if unknown:
        raise UserError(f"unknown flavour {unknown[0]!r}; known: {', '.join(FLAVOURS)}")
    return [FLAVOURS[n] for n in names]


def read_model_config(spec, token: str | None = None) -> dict:
    """config.json of a `models.ModelSpec`: the local folder's, or the Hub repo's (that file
    only). Raises `ModelLoadError` (a UserError) when it is missing or unreadable."""
    from depthcard.analysis.models import ModelLoadError, read_config

    if spec.path is not None:
        return read_config(spec.path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(spec.repo_id, "config.json", revision=spec.revision, token=token)
    except (OSError, EntryNotFoundError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{spec.text}: cannot read config.json from the Hub ({first})"
        ) from exc
    return read_config(Path(path).parent)


def word_lengths(prompts: PromptInputs) -> tuple[dict[str, list[int]], int]:
    """Token counts estimated from words (`TOKENS_PER_WORD`, plus `CHAT_TEMPLATE_TOKENS` for
    a chat prompt, one BOS for raw text), keyed like `tokenize_inputs`; and the NLL turn's."""

    def count(texts: list[str], extra: int) -> list[int]:
        return [round(TOKENS_PER_WORD * len(t.split())) + extra for t in texts]

    out = {
        "harmful_chat": count(prompts.harmful.texts, CHAT_TEMPLATE_TOKENS),
        "harmless_chat": count(prompts.harmless.texts, CHAT_TEMPLATE_TOKENS),
        "harmful_raw": count(prompts.harmful.texts, 1),
    }
    if prompts.capability is not None:
        out["capability_chat"] = count(prompts.capability.texts, CHAT_TEMPLATE_TOKENS)
        out["capability_raw"] = count(prompts.capability.texts, 1)
    for i, domain in enumerate(prompts.domains):
        out[f"domain{i}_chat"] = count(domain.texts, CHAT_TEMPLATE_TOKENS)
    return out, CHAT_TEMPLATE_TOKENS


def tokenizer_lengths(prompts: PromptInputs, tokenizer) -> tuple[dict[str, list[int]], int]:
    """Token counts by the child's own tokenizer, exactly as the audit tokenizes; and the
    tokens of the empty user turn answers are NLL-scored after (`judges.NLL_CONTEXT`)."""
    from depthcard.analysis.capture import tokenize_prompts
    from depthcard.analysis.judges import NLL_CONTEXT
    from depthcard.analysis.prompt_inputs import tokenize_inputs

    tok = tokenize_inputs(prompts, tokenizer)
    context = tokenize_prompts([NLL_CONTEXT], "chat", tokenizer, tokenizer)[0]
    return {key: [len(ids) for ids in rows] for key, rows in tok.ids.items()}, len(context)


def local_tokenizer(spec):
    """The child's tokenizer when it is a local folder that has one, else None.

    Raises:
        ModelLoadError: the tokenizer cannot be loaded or has no chat template (the audit
            would refuse the model for the same reason).
    """
    if spec.path is None or not any((spec.path / f).is_file() for f in _TOKENIZER_FILES):
        return None
    from depthcard.analysis.pairing import load_tokenizer, require_chat_template

    tokenizer = load_tokenizer(spec.path)
    require_chat_template(tokenizer, spec.path)
    return tokenizer


def prompt_lengths(prompts: PromptInputs, cfg: AuditConfig, tokenizer=None) -> PromptLengths:
    """Token counts and the audit's held-out split (tokenizer: the child's, or None: words).

    Raises:
        UserError: a set too small to split (as the audit would say).
    """
    counts, context = (
        word_lengths(prompts) if tokenizer is None else tokenizer_lengths(prompts, tokenizer)
    )
    split = held_out_split(prompts, cfg.eval_fraction, cfg.seed)
    return PromptLengths(counts, split.fit, split.eval, context)


def set_tokens(lengths: PromptLengths) -> list[SetTokens]:
    """One row per tokenized set, with its split sizes where it is split."""
    roles = {v: k for k, v in _SPLIT_KEYS.items()} | {"capability_raw": "capability"}
    rows = []
    for key, counts in lengths.tokens.items():
        role = roles.get(key)
        rows.append(
            SetTokens(
                key=key, prompts=len(counts), tokens=sum(counts),
                fit=len(lengths.fit[role]) if role in lengths.fit else None,
                eval=len(lengths.eval[role]) if role in lengths.eval else None,
            )
        )  # fmt: skip
    return rows


def check_directions(cfg: AuditConfig, lengths: PromptLengths, size: ModelSize) -> None:
    """K must fit the rank of M_DiD on the fit half, as the audit checks once it has a model."""
    check_num_directions(cfg.num_directions, len(lengths.fit["harmful"]), size.hidden_size)


def build_estimate(
    cfg: AuditConfig,
    child: ModelSize,
    lengths: PromptLengths,
    flavours: list[str],
    *,
    cap_minutes: float,
    base: ModelSize | None = None,
    counted_by_tokenizer: bool = False,
    download_bytes: int = 0,
) -> AuditEstimate:
    """The estimate from sizes and token counts: plan, totals, minutes on each flavour, and
    the flavour and timeout the bot would choose under the timeout cap `cap_minutes`.

    Raises:
        UserError: an unknown flavour or judge, or more directions than the fit half allows.
    """
    from depthcard.analysis.judges import JUDGES

    rows = flavour_rows(flavours)
    if cfg.judge not in JUDGES:
        raise UserError(f"unknown judge {cfg.judge!r}; available: {', '.join(sorted(JUDGES))}")
    check_directions(cfg, lengths, child)
    nll_rule = JUDGES[cfg.judge].nll_rule
    plan = work_plan(cfg, child, lengths, paired=base is not None, nll_rule=nll_rule)
    estimates = [
        flavour_estimate(plan, child, f, dtype=cfg.dtype, download_bytes=download_bytes)
        for f in rows
    ]
    best = choose_flavour(estimates, cap_minutes)
    notes = list(NOTES)
    if not counted_by_tokenizer:
        notes.insert(0, f"prompt tokens estimated at {TOKENS_PER_WORD} a word + "
                        f"{CHAT_TEMPLATE_TOKENS} template tokens a chat prompt (no local "
                        "tokenizer)")  # fmt: skip
    if not child.exact:
        notes.insert(0, f"parameters of model type {child.model_type!r}: the Llama formula, "
                        "approximate")  # fmt: skip
    return AuditEstimate(
        kind="pair" if base is not None else "child-only",
        base=base,
        child=child,
        config=cfg,
        min_k_search=getattr(cfg, "min_k_search", "ordered"),
        token_source="tokenizer" if counted_by_tokenizer else "words",
        sets=set_tokens(lengths),
        plan=plan,
        totals=plan_totals(plan),
        flavours=estimates,
        chosen=None if best is None else best.flavour,
        timeout_minutes=None if best is None else job_timeout_minutes(best, cap_minutes),
        timeout_cap_minutes=cap_minutes,
        notes=notes,
    )


def estimate_audit(
    *,
    base,
    child,
    prompts: PromptInputs,
    cfg: AuditConfig,
    flavours: list[str],
    cap_minutes: float,
    token: str | None = None,
) -> AuditEstimate:
    """Estimate the audit of `child` (and `base`; `models.ModelSpec`s) on `flavours`, the
    bot's choice among them under the timeout cap `cap_minutes`.

    Raises:
        ModelLoadError: a missing or unreadable config.json, a pair whose shapes differ, a
            local child tokenizer without a chat template.
        UserError: as `build_estimate`, or prompt sets too small to split.
    """
    from depthcard.analysis.pairing import check_shapes

    flavour_rows(flavours)  # an unknown flavour fails before any file is read
    child_config = read_model_config(child, token)
    child_size = model_size(child_config, child.text)
    base_size = None
    if base is not None:
        base_config = read_model_config(base, token)
        check_shapes(_resolved(base, base_config), _resolved(child, child_config))
        base_size = model_size(base_config, base.text)
    tokenizer = local_tokenizer(child)
    lengths = prompt_lengths(prompts, cfg, tokenizer)
    pairs = ((base_size, base), (child_size, child))
    download = sum(size.weight_bytes for size, spec in pairs if size and spec.path is None)
    return build_estimate(
        cfg, child_size, lengths, flavours, cap_minutes=cap_minutes, base=base_size,
        counted_by_tokenizer=tokenizer is not None, download_bytes=download,
    )  # fmt: skip


def _resolved(spec, config: dict):
    from depthcard.analysis.models import ResolvedModel

    folder = spec.path or Path(spec.text)
    return ResolvedModel(folder, "local" if spec.path else "hub", spec.repo_id, spec.revision,
                         None, config)  # fmt: skip
