"""Tiny in-process models and tokenizers for tests: built in well under a second.

`planted_pair` gives a base model and a child that equals it except for one MLP, which adds
a fixed direction u in proportion to how "harmful" the residual looks, so the true
alignment shift is known exactly: zero before the planted block, rank one right after it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<s>"]
HARMFUL_WORDS = "bomb poison hack steal weapon malware stalk fraud explosive launder".split()
HARMLESS_WORDS = "bread garden poem tennis recipe puppy violin painting kite bicycle".split()
COMMON_WORDS = "how do i make a the my for to with build write please quickly".split()


def make_tokenizer(extra_words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer with a ChatML template; `\\n` is a token."""
    words = HARMFUL_WORDS + HARMLESS_WORDS + COMMON_WORDS + (extra_words or [])
    vocab = {tok: i for i, tok in enumerate(SPECIALS + ["\n", "user", "assistant"] + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\n"), "isolated"), pre_tokenizers.Split(" ", "removed")]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML
    tok.padding_side = "left"
    return tok


def make_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 4) -> nn.Module:
    """A random tiny Llama in eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def prompts(words: list[str], n: int, seed: int) -> list[str]:
    """`n` distinct short prompts mixing one class's words with common words."""
    gen = torch.Generator().manual_seed(seed)
    out: list[str] = []
    while len(out) < n:
        pick = [words[i] for i in torch.randint(len(words), (3,), generator=gen)]
        common = [COMMON_WORDS[i] for i in torch.randint(len(COMMON_WORDS), (2,), generator=gen)]
        text = " ".join(common[:1] + pick[:2] + common[1:] + pick[2:])
        if text not in out:
            out.append(text)
    return out


class PlantedMLP(nn.Module):
    """Wraps an MLP: output + scale · relu(⟨x, w⟩ − b) · u, at every position."""

    def __init__(self, mlp: nn.Module, w: torch.Tensor, b: float, u: torch.Tensor, scale: float):
        super().__init__()
        self.mlp, self.scale, self.b = mlp, scale, b
        self.register_buffer("w", w.float())
        self.register_buffer("u", u.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.relu(x @ self.w - self.b)[..., None]
        return self.mlp(x) + self.scale * gate * self.u


def plant(base: nn.Module, block: int, w, b: float, u, scale: float = 4.0) -> nn.Module:
    """A copy of `base` whose decoder block `block` carries the planted MLP."""
    child = copy.deepcopy(base)
    layer = child.model.layers[block]
    layer.mlp = PlantedMLP(layer.mlp, w, b, u, scale)
    return child.eval()


def mlp_inputs(model: nn.Module, block: int, ids: list[list[int]]) -> torch.Tensor:
    """(prompt, d) last-token inputs of decoder block `block`'s MLP."""
    from depthcard.analysis.capture import pad_left

    seen: list[torch.Tensor] = []
    handle = model.model.layers[block].mlp.register_forward_hook(
        lambda mod, args, out: seen.append(args[0][:, -1].detach())
    )
    try:
        x, mask, pos = pad_left(ids, 0, torch.device("cpu"))
        with torch.no_grad():
            model(input_ids=x, attention_mask=mask, position_ids=pos)
    finally:
        handle.remove()
    return seen[0]


def harm_detector(
    base: nn.Module, block: int, harmful_ids: list[list[int]], harmless_ids: list[list[int]]
) -> tuple[torch.Tensor, float]:
    """(w, b): unit mean-difference direction of the MLP inputs, threshold above every
    harmless prompt, so the planted MLP never fires on the harmless set."""
    xs, xh = mlp_inputs(base, block, harmful_ids), mlp_inputs(base, block, harmless_ids)
    w = xs.mean(0) - xh.mean(0)
    w = w / w.norm()
    return w, float((xh @ w).max())


@dataclass(frozen=True)
class Planted:
    """A base's child with a planted harm-triggered direction, and the prompts it was cut on."""

    child: nn.Module
    u: torch.Tensor  # (d,) unit direction the planted MLP writes on harmful prompts
    harmful: list[str]
    harmless: list[str]
    ids_s: list[list[int]]  # chat-format ids of `harmful`
    ids_h: list[list[int]]


def planted_pair(tok, base: nn.Module, block: int, n: int, u_seed: int, scale: float) -> Planted:
    """`n` harmful and `n` harmless prompts, a detector fitted on them at `block`, and the
    child that writes a random unit u (seeded by `u_seed`) there on harmful prompts."""
    from depthcard.analysis.capture import tokenize_prompts

    harmful, harmless = prompts(HARMFUL_WORDS, n, 1), prompts(HARMLESS_WORDS, n, 2)
    ids_s = tokenize_prompts(harmful, "chat", tok, tok)
    ids_h = tokenize_prompts(harmless, "chat", tok, tok)
    w, b = harm_detector(base, block, ids_s, ids_h)
    u = torch.randn(base.config.hidden_size, generator=torch.Generator().manual_seed(u_seed))
    u = u / u.norm()
    return Planted(plant(base, block, w, b, u, scale), u, harmful, harmless, ids_s, ids_h)
