"""A tiny random Gemma-3 base folder with no chat template, built in well under a second.

The Gemma calibration family's tests train, audit and attack children of it. The tokenizer
is word-level over the family's training texts and the audit's prompts (everything else is
`<unk>`), with Gemma's special tokens, so the family's chat template applies unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from depthcard import prompts
from depthcard.lab import refusal_training_set as ts

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def _words() -> list[str]:
    texts = [t for n in prompts.list_builtin() for t in prompts.load_builtin(n).texts]
    convs = ts.conversations(1.0, "recovery", True, 0) + ts.conversations(1.0, "explained", True, 0)
    texts += [c.user + " " + c.context + c.answer for c in convs]
    found = {w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)}
    return sorted(found | {"user", "model"})


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIALS + ["\n"] + _words())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"<start_of_turn>|<end_of_turn>|<bos>|\n"), "isolated"),
        pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), "isolated"),
        pre_tokenizers.Split(" ", "removed"),
    ])  # fmt: skip
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )  # fmt: skip
    tok.padding_side = "left"
    return tok


def tiny_gemma_base(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """Save a random tiny Gemma-3 and its tokenizer (no chat template) into `folder`."""
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=256, sliding_window=64, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    Gemma3ForCausalLM(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
