"""The prompt sets of one audit and their token ids, in the formats each stage reads."""

from __future__ import annotations

from dataclasses import dataclass

from depthcard.analysis.capture import suffix_token_count, tokenize_prompts
from depthcard.schemas.report import PromptSetRef


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
class TokenizedInputs:
    """Token ids per (set, format); every model of the audit reads exactly these."""

    ids: dict[str, list[list[int]]]
    pad_id: int
    n_suffix: int


def tokenize_inputs(prompts: PromptInputs, tokenizer) -> TokenizedInputs:
    """harmful/harmless/capability in chat format, harmful raw, capability raw (for ΔCE)."""
    ids = {
        "harmful_chat": tokenize_prompts(prompts.harmful.texts, "chat", tokenizer, tokenizer),
        "harmless_chat": tokenize_prompts(prompts.harmless.texts, "chat", tokenizer, tokenizer),
        "harmful_raw": tokenize_prompts(prompts.harmful.texts, "raw", tokenizer, tokenizer),
    }
    if prompts.capability is not None:
        texts = prompts.capability.texts
        ids["capability_chat"] = tokenize_prompts(texts, "chat", tokenizer, tokenizer)
        ids["capability_raw"] = tokenize_prompts(texts, "raw", tokenizer, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return TokenizedInputs(ids, pad, suffix_token_count(tokenizer, tokenizer))
