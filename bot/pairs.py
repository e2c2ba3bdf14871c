"""Which base model a new release is the child of, whether the pair is comparable, and why not.

Pure functions over what the Hub says about a repo (`RepoFacts`), so every rule is testable
without a network. The order of evidence (docs/bot.md): the card's `base_model` (with
`base_model_relation`), then the `base_model:finetune:` tags, then name rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPT_OUT_KEY = "depthcard"
"""Card metadata key: `depthcard: opt-out` (or `false`/`no`) stops all depthcard PRs."""
OPT_OUT_VALUES = frozenset({"opt-out", "optout", "false", "no", "off", "never"})
# Relations that change the weights in ways a residual-stream comparison does not describe.
NOT_A_CHILD = frozenset({"adapter", "quantized", "merge"})
CHILD_SUFFIXES = ("-Instruct", "-it", "-Chat")
_PICKLE = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size")
# Compared when both configs state them (the audit's pair check does the same).
_HEAD_KEYS = ("num_attention_heads", "num_key_value_heads")


@dataclass(frozen=True)
class RepoFacts:
    """What the bot reads about one repo at one commit."""

    repo_id: str
    sha: str
    files: tuple[str, ...]
    card: dict = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    gated: bool = False
    private: bool = False
    parameters: int | None = None
    config: dict | None = None


def facts_from_info(info, config: dict | None = None) -> RepoFacts:
    """RepoFacts from a huggingface_hub ModelInfo (and the repo's parsed config.json)."""
    card = info.card_data.to_dict() if info.card_data is not None else {}
    st = getattr(info, "safetensors", None)
    return RepoFacts(
        repo_id=info.id,
        sha=info.sha,
        files=tuple(s.rfilename for s in info.siblings or []),
        card=card,
        tags=tuple(info.tags or ()),
        gated=bool(info.gated),
        private=bool(info.private),
        parameters=getattr(st, "total", None) if st is not None else None,
        config=config,
    )


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def declared_bases(child: RepoFacts) -> tuple[list[str], str | None]:
    """Bases the card metadata or tags name, or ([], reason) when the relation rules it out."""
    relation = child.card.get("base_model_relation")
    if isinstance(relation, str) and relation in NOT_A_CHILD:
        return [], f"base_model_relation is {relation!r}, not a fine-tune"
    bases = _as_list(child.card.get("base_model"))
    for tag in child.tags:
        if tag.startswith("base_model:finetune:"):
            bases.append(tag.removeprefix("base_model:finetune:"))
    bases = [b for b in dict.fromkeys(bases) if b != child.repo_id and "/" in b]
    return bases, None


def name_rule_bases(repo_id: str) -> list[str]:
    """Base names guessed from the child's name: `X-Instruct` → `X-Base`, `X` (same org)."""
    org, _, name = repo_id.partition("/")
    for suffix in CHILD_SUFFIXES:
        if name.lower().endswith(suffix.lower()) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            return [f"{org}/{stem}-Base", f"{org}/{stem}"]
    return []


def candidate_bases(child: RepoFacts) -> tuple[list[str], str | None]:
    """Bases to try, best evidence first; a reason instead when the repo is not a child."""
    declared, reason = declared_bases(child)
    if reason:
        return [], reason
    return declared or name_rule_bases(child.repo_id), None


def looks_instruct(facts: RepoFacts) -> bool:
    """Evidence that a repo is itself an instruct (chat) model.

    The Hub tags models whose tokenizer has a chat template `conversational`; otherwise an
    instruct-style name (`-Instruct`, `-it`, `-Chat`) counts.
    """
    if "conversational" in facts.tags:
        return True
    name = facts.repo_id.partition("/")[2].lower()
    return any(name.endswith(s.lower()) and len(name) > len(s) for s in CHILD_SUFFIXES)


def is_finetune_of(child: RepoFacts, parent_id: str) -> bool:
    """True when `child` declares itself a fine-tune (`base_model_relation: finetune`, or a
    `base_model:finetune:` tag) of `parent_id`."""
    declared = _as_list(child.card.get("base_model"))
    if child.card.get("base_model_relation") == "finetune" and parent_id in declared:
        return True
    return f"base_model:finetune:{parent_id}" in child.tags


def is_instruct_finetune(child: RepoFacts, parent: RepoFacts) -> bool:
    """An instruct → fine-tune pair: audit it as three models (parent's base, parent, child).

    The bot then audits the parent against its own base with `--third` the child, and the
    card says how much of the parent's alignment the fine-tune kept.
    """
    return is_finetune_of(child, parent.repo_id) and looks_instruct(parent)


def opted_out_in_card(card: dict) -> bool:
    """True when the card metadata says `depthcard: opt-out` (or false/no/never)."""
    value = card.get(OPT_OUT_KEY)
    if value is False:
        return True
    return isinstance(value, str) and value.strip().lower() in OPT_OUT_VALUES


def weights_reason(files: tuple[str, ...]) -> str | None:
    """Why the weights cannot be loaded safely, or None when safetensors are there."""
    if any(f.endswith(".safetensors") for f in files):
        return None
    if any(f.endswith(_PICKLE) for f in files):
        return "pickle-only weights (no safetensors); depthcard loads safetensors only"
    return "no safetensors weights"


def config_reason(config: dict | None) -> str | None:
    """Why a config.json rules a repo out (remote code, missing), or None."""
    if config is None:
        return "no config.json"
    if "auto_map" in config:
        return "needs remote code (config.json has auto_map); depthcard never trusts remote code"
    return None


def repo_reason(facts: RepoFacts, *, budget: int | None = None, licences=()) -> str | None:
    """The first reason to skip a repo (either side of a pair), or None when it is usable."""
    who = facts.repo_id
    if facts.private:
        return f"{who}: private"
    if facts.gated:
        return f"{who}: gated"
    for reason in (weights_reason(facts.files), config_reason(facts.config)):
        if reason:
            return f"{who}: {reason}"
    if budget is not None and facts.parameters is not None and facts.parameters > budget:
        return f"{who}: over budget ({facts.parameters:,} > {budget:,} parameters)"
    licence = facts.card.get("license")
    if licences and licence not in licences:
        return f"{who}: licence {licence!r} is not on the allow-list"
    return None


def mismatch(base: dict, child: dict) -> str | None:
    """Why two config.json files do not form a comparable pair, or None when they do."""
    arch_b, arch_c = base.get("architectures"), child.get("architectures")
    if arch_b != arch_c:
        return f"architectures differ ({arch_b} vs {arch_c})"
    for key in _SHAPE_KEYS:
        b, c = _text_config(base).get(key), _text_config(child).get(key)
        if b is None or b != c:
            return f"{key} differs ({b} vs {c})"
    for key in _HEAD_KEYS:
        b, c = _text_config(base).get(key), _text_config(child).get(key)
        if b is not None and c is not None and b != c:
            return f"{key} differs ({b} vs {c})"
    return None


def _text_config(config: dict) -> dict:
    """Multimodal wrappers keep the language model's shape in `text_config`."""
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config
