"""The prompt sets of one audit and their token ids, in the formats each stage reads."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from depthcard.analysis.capture import suffix_token_count, tokenize_prompts
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import DEFAULT_PROMPT_SETS, PromptSetRef, SetSplit

MIN_EVAL = 8  # fewer eval prompts than this and a refusal share says nothing
SPLIT_ROLES = ("harmful", "harmless", "capability")


@dataclass(frozen=True)
class PromptInputs:
    """Prompt sets (prompts.LoadedPromptSet) after any --max-prompts subsampling.

    `source_counts` maps a set's name to the number of prompts in its file.
    """

    harmful: object
    harmless: object
    capability: object | None = None
    domains: tuple = ()
    source_counts: dict | None = None

    def roles(self) -> list[tuple[str, object]]:
        out = [("harmful", self.harmful), ("harmless", self.harmless)]
        if self.capability is not None:
            out.append(("capability", self.capability))
        return out + [("domain", d) for d in self.domains]

    def refs(self) -> list[PromptSetRef]:
        counts = self.source_counts or {}
        return [
            PromptSetRef(
                role=role,
                name=s.name,
                version=s.version,
                sha256=s.sha256,
                count=counts.get(s.name, s.count),
                used=s.count,
            )
            for role, s in self.roles()
        ]


@dataclass(frozen=True)
class HeldOutSplit:
    """Prompt indices of each split set (harmful, harmless, capability): fit and eval halves.

    Directions, l* and K are fitted on `fit`; refusal shares, KL, ΔCE and min_k are measured
    on `eval` (docs/metrics.md, "Held-out evaluation"). Indices are in file order.
    """

    fit: dict[str, list[int]]
    eval: dict[str, list[int]]

    def records(self, prompts: PromptInputs) -> list[SetSplit]:
        return [
            SetSplit(role=role, name=s.name, fit=len(self.fit[role]), eval=len(self.eval[role]))
            for role, s in prompts.roles()
            if role in self.fit
        ]


def split_indices(categories: list[str], eval_fraction: float, seed: int, name: str):
    """(fit, eval) indices of one set: each category split with `seed`, its share rounded.

    Raises:
        UserError: a category left empty in either half, or fewer than MIN_EVAL eval prompts.
    """
    groups: dict[str, list[int]] = {}
    for i, cat in enumerate(categories):
        groups.setdefault(cat, []).append(i)
    rng = random.Random(f"{seed}/{name}")
    fit, held = [], []
    for cat in sorted(groups):
        order = list(groups[cat])
        rng.shuffle(order)
        n_eval = round(len(order) * eval_fraction)
        if n_eval == 0 or n_eval == len(order):
            raise UserError(
                f"prompt set {name!r}: category {cat!r} has {len(order)} prompt(s), too few to "
                f"split into fit and eval halves (--eval-fraction {eval_fraction:g}); add prompts "
                "or merge categories"
            )
        held += order[:n_eval]
        fit += order[n_eval:]
    if len(held) < MIN_EVAL:
        raise UserError(
            f"prompt set {name!r}: the eval half has {len(held)} prompts, fewer than {MIN_EVAL}; "
            "use more prompts (--max-prompts) or a larger --eval-fraction"
        )
    return sorted(fit), sorted(held)


def check_num_directions(num_directions: int, fit_harmful: int, hidden_size: int) -> None:
    """K must fit the rank of M_DiD on the fit half: at most min(harmful fit prompts, d).

    The one check of `--num-directions`, used by `depthcard estimate` (from config.json) and
    by the audit once its model is loaded.

    Raises:
        UserError: K is above that cap.
    """
    cap = min(fit_harmful, hidden_size)
    if num_directions > cap:
        raise UserError(
            f"--num-directions {num_directions} exceeds the largest possible rank of M_DiD on "
            f"the fit half, min(harmful fit prompts {fit_harmful}, d_model {hidden_size}) = {cap}"
        )


def held_out_split(prompts: PromptInputs, eval_fraction: float, seed: int) -> HeldOutSplit:
    """The seeded, category-stratified fit/eval split of every split set."""
    fit, held = {}, {}
    for role, s in prompts.roles():
        if role in SPLIT_ROLES:
            fit[role], held[role] = split_indices(s.categories, eval_fraction, seed, s.name)
    return HeldOutSplit(fit, held)


@dataclass(frozen=True)
class TokenizedInputs:
    """Token ids per (set, format); every model of the audit reads exactly these."""

    ids: dict[str, list[list[int]]]
    pad_id: int
    n_suffix: int


def tokenize_inputs(prompts: PromptInputs, tokenizer) -> TokenizedInputs:
    """harmful/harmless/capability in chat format, harmful raw, capability raw (for ΔCE),
    and each domain set in chat format (`domain{i}_chat`)."""
    ids = {
        "harmful_chat": tokenize_prompts(prompts.harmful.texts, "chat", tokenizer, tokenizer),
        "harmless_chat": tokenize_prompts(prompts.harmless.texts, "chat", tokenizer, tokenizer),
        "harmful_raw": tokenize_prompts(prompts.harmful.texts, "raw", tokenizer, tokenizer),
    }
    if prompts.capability is not None:
        texts = prompts.capability.texts
        ids["capability_chat"] = tokenize_prompts(texts, "chat", tokenizer, tokenizer)
        ids["capability_raw"] = tokenize_prompts(texts, "raw", tokenizer, tokenizer)
    for i, domain in enumerate(prompts.domains):
        ids[f"domain{i}_chat"] = tokenize_prompts(domain.texts, "chat", tokenizer, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return TokenizedInputs(ids, pad, suffix_token_count(tokenizer, tokenizer))


def load_prompt_inputs(
    harmful: Path | None = None,
    harmless: Path | None = None,
    capability: Path | None = None,
    domains: Sequence[Path] = (),
    *,
    max_prompts: int | None = None,
    seed: int = 0,
) -> PromptInputs:
    """The prompt sets of an audit: the given files, else the built-in default of each role.

    Args:
        harmful, harmless, capability: prompt set files (YAML); None reads
            `schemas.report.DEFAULT_PROMPT_SETS[role]`.
        domains: domain sets, in order (no default).
        max_prompts: cap per set; a larger set is subsampled with `seed`, stratified by
            category (`LoadedPromptSet.subset`). None keeps every prompt.

    Returns:
        The sets after capping; `source_counts` keeps each file's full size for the report.

    Raises:
        PromptFileError: a file is missing, malformed, empty or of the wrong kind.
    """
    from depthcard import prompts as prompt_sets

    def load(path: Path | None, kind: str):
        if path is None:
            return prompt_sets.load_builtin(DEFAULT_PROMPT_SETS[kind])
        return prompt_sets.load_prompt_set(path, expect_kind=kind)

    def cap(s):
        if max_prompts is None or s.count <= max_prompts:
            return s
        return s.subset(max_prompts, seed)

    full = {
        "harmful": load(harmful, "harmful"),
        "harmless": load(harmless, "harmless"),
        "capability": load(capability, "capability"),
    }
    loaded_domains = [prompt_sets.load_prompt_set(p, expect_kind="domain") for p in domains]
    counts = {s.name: s.count for s in [*full.values(), *loaded_domains]}
    return PromptInputs(
        harmful=cap(full["harmful"]),
        harmless=cap(full["harmless"]),
        capability=cap(full["capability"]),
        domains=tuple(cap(d) for d in loaded_domains),
        source_counts=counts,
    )
