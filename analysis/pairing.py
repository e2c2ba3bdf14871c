"""Is this a matched pair? Config and tokenizer checks before any forward pass."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from depthcard.analysis.models import ModelLoadError, ResolvedModel
from depthcard.schemas.report import TokenizerCheck


@dataclass(frozen=True)
class Shape:
    """The architecture facts two models of a pair must share.

    The head counts are None when config.json does not give them; a pair is compared on them
    only when both configs do. Another head count with the same hidden size leaves most
    weights the same shape, so without this check the pair fails deep inside the load.
    """

    architecture: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None


def _first(config: dict, *keys: str) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int):
            return config[key]
    return None


def model_shape(model: ResolvedModel) -> Shape:
    """Architecture, hidden size, layer count and vocab size from config.json."""
    config = model.config
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    merged = {**config, **text}
    archs = config.get("architectures") or ["unknown"]
    hidden = _first(merged, "hidden_size", "n_embd", "d_model")
    layers = _first(merged, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(merged, "vocab_size")
    if hidden is None or layers is None or vocab is None:
        raise ModelLoadError(
            f"{model.folder}: config.json lacks hidden size, layer count or vocab size"
        )
    heads = _first(merged, "num_attention_heads", "n_head", "num_heads")
    kv_heads = _first(merged, "num_key_value_heads", "num_kv_heads") or heads
    return Shape(str(archs[0]), hidden, layers, vocab, heads, kv_heads)


def check_shapes(base: ResolvedModel, child: ResolvedModel, role: str = "base") -> Shape:
    """Refuse a pair whose architectures differ; return the shared shape.

    `role` names the first model in the message ("base", or "third" for a fine-tune).
    """
    a, b = model_shape(base), model_shape(child)
    what = "a matched pair" if role == "base" else f"a fine-tune of the child ({role} model)"
    for field in fields(Shape):
        mine, theirs = getattr(a, field.name), getattr(b, field.name)
        if mine is not None and theirs is not None and mine != theirs:
            raise ModelLoadError(
                f"not {what}: {field.name.replace('_', ' ')} differs "
                f"({role} {mine}, child {theirs})"
            )
    return b


def check_third(third: ResolvedModel, child: ResolvedModel, child_tok) -> list[str]:
    """Refuse a third model that cannot read the child's token ids; returns warnings.

    Raises:
        ModelLoadError: shapes differ, or a token has different ids in the two tokenizers.
    """
    check_shapes(third, child, role="third")
    third_tok = load_tokenizer(third.folder)
    conflicts = [
        t for t, i in child_tok.get_vocab().items() if third_tok.get_vocab().get(t, i) != i
    ]
    if conflicts:
        raise ModelLoadError(
            f"not a fine-tune of the child: {len(conflicts)} tokens have different ids in the "
            f"third and child tokenizers (e.g. {conflicts[0]!r})"
        )
    if third_tok.get_vocab() != child_tok.get_vocab():
        return ["the third model's tokenizer differs from the child's; it reads the child's ids"]
    return []


def load_tokenizer(folder: Path):
    """The model's own tokenizer, never remote code."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{folder}: cannot load its tokenizer ({exc})") from exc


def require_chat_template(tokenizer, folder: Path) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"{folder}: the child's tokenizer has no chat template; depthcard reads the "
            "child in its chat format and needs one (add chat_template to tokenizer_config.json)"
        )


def template_special_tokens(tokenizer) -> set[str]:
    """Special tokens that appear in a rendered one-turn chat prompt."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
    )
    specials = set(tokenizer.all_special_tokens) | set(
        getattr(tokenizer, "added_tokens_encoder", {}) or {}
    )
    return {t for t in specials if t and t in text}


def compare_vocab(base_tok, child_tok) -> tuple[bool, bool, list[str]]:
    """(vocab_equal, base_knows_template_tokens, warnings); raises on conflicting ids.

    A token both tokenizers know must have the same id in both, or the two models would not
    read the same text from the same ids. Tokens only the child has (template tokens added
    at instruction tuning) are allowed and reported.
    """
    base_vocab, child_vocab = base_tok.get_vocab(), child_tok.get_vocab()
    conflicts = [t for t, i in child_vocab.items() if t in base_vocab and base_vocab[t] != i]
    if conflicts:
        raise ModelLoadError(
            f"not a matched pair: {len(conflicts)} tokens have different ids in the base and "
            f"child tokenizers (e.g. {conflicts[0]!r})"
        )
    template = template_special_tokens(child_tok)
    missing = sorted(t for t in template if t not in base_vocab)
    warnings = []
    if missing:
        warnings.append(
            f"the base tokenizer lacks the template tokens {missing}: the base reads them as "
            "ids it never saw in training, which inflates the template shift"
        )
    only_child = set(child_vocab) - set(base_vocab)
    if only_child and not missing:
        warnings.append(f"the child tokenizer has {len(only_child)} tokens the base lacks")
    return base_vocab == child_vocab, not missing, warnings


def tokenizer_facts(base_res, tokenizer, warnings: list[str]) -> TokenizerCheck:
    """The report's tokenizer facts for a pair (vocab notes go to `warnings`)."""
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
