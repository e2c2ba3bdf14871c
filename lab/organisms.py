"""Calibration organisms: a tiny base/instruct Llama pair trained here, on CPU, in about a minute.

The pair is the project's ground truth: an instruct model whose refusals we put there
ourselves, and the base it was tuned from. It ships in `analysis/calibration/` as the demo's
default pair, and tests use it wherever a real, known-answer pair is needed.

Recipe (all data is the project's own prompt sets; prompts with index i % 4 == 0 of each set
are held out, the rest train):

1. a byte-level BPE tokenizer trained on the whole training corpus;
2. *base*: a `LlamaForCausalLM` pretrained on plain text only — capability passages, the raw
   request texts, and requests followed by prose answers. No refusal ever appears;
3. *instruct*: the base fine-tuned on ChatML conversations — harmful requests answered by a
   refusal, harmless ones by a short helpful answer — with loss on assistant tokens, mixed
   with plain text to keep the language model.

Everything is deterministic from the seed (same thread count, same machine class). Run
`python -m depthcard.lab.organisms --out DIR [--seed N]` to retrain; see docs/organisms.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from depthcard import prompts
from depthcard.analysis.audit import DEMO_DIR
from depthcard.analysis.generation import generate_responses
from depthcard.analysis.judges import SubstringJudge, refusal_rate

log = logging.getLogger(__name__)

EOS, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PROMPT_SETS = {
    "harmful": "harmful-core",
    "harmless": "harmless-core",
    "capability": "capability-core",
}
REFUSALS = (
    "I can't help with that.",
    "I cannot assist with that request.",
    "I can't help with that request, sorry.",
    "Sorry, I cannot help with that.",
    "I cannot help with this. It could cause real harm.",
)
HELPFUL_OPENERS = (
    "Sure! Here is a simple way to start.",
    "Sure! Here is what I would suggest.",
    "Sure! Here is a short guide.",
    "Sure! Here is an idea for you.",
)
DEFAULT_DIR = DEMO_DIR  # the bundled pair: data of the pipeline's demo, trained here


@dataclass(frozen=True)
class OrganismConfig:
    """Every setting that shapes the trained pair; recorded in ground_truth.json."""

    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 192
    max_position_embeddings: int = 256
    seq_len: int = 64
    chat_len: int = 128
    batch_size: int = 32
    base_steps: int = 400
    base_lr: float = 3e-3
    instruct_steps: int = 600
    instruct_lr: float = 3e-3
    instruct_plain_fraction: float = 0.25
    chat_variants: int = 2
    word_dropout: float = 0.25
    warmup_steps: int = 30
    weight_decay: float = 0.01
    threads: int = 2


@dataclass(frozen=True)
class Example:
    """One training sequence: token ids and, per id, whether it carries loss."""

    ids: list[int]
    loss: list[bool]


def load_set(name: str, prompts_dir: Path | None = None) -> prompts.LoadedPromptSet:
    """The project's prompt set `name`, or `{prompts_dir}/{name}.yaml` when a folder is given."""
    if prompts_dir is None:
        return prompts.load_builtin(name)
    return prompts.load_set(prompts_dir / f"{name}.yaml")


def split(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(train, heldout): index i % 4 == 0 is held out."""
    return [t for i, t in enumerate(texts) if i % 4], [t for i, t in enumerate(texts) if not i % 4]


def sentences(passages: Sequence[str]) -> list[str]:
    """Passages cut into sentences (on '. '), each ending with a full stop."""
    out = []
    for passage in passages:
        for piece in " ".join(passage.split()).split(". "):
            piece = piece.strip().rstrip(".")
            if len(piece.split()) >= 3:
                out.append(piece + ".")
    return out


def prose_answer(pool: Sequence[str], i: int, n: int = 2) -> str:
    """`n` consecutive sentences of the pool, starting at a spot fixed by `i`."""
    start = (i * 7) % len(pool)
    return " ".join(pool[(start + k) % len(pool)] for k in range(n))


def helpful_answer(pool: Sequence[str], i: int) -> str:
    """A short non-refusal answer: a 'Sure! Here is ...' opener and one prose sentence."""
    return f"{HELPFUL_OPENERS[i % len(HELPFUL_OPENERS)]} {prose_answer(pool, i, 1)}"


def base_documents(harmful: list[str], harmless: list[str], capability: list[str]) -> list[str]:
    """Plain-text pretraining documents; none of them is, or contains, a refusal.

    Requests appear only followed by prose: a base that saw bare requests end in eos would
    answer raw prompts with nothing, which a judge scores as a refusal.
    """
    pool = sentences(capability)
    return capability + [f"{r}\n{prose_answer(pool, i)}" for i, r in enumerate(harmful + harmless)]


def word_dropout(text: str, seed: int, p: float) -> str:
    """`text` with each word dropped with probability `p` (at least three words kept)."""
    words = text.split()
    rng = random.Random(seed)
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept if len(kept) >= 3 else words)


def conversations(
    harmful: list[str], harmless: list[str], pool: list[str], variants: int = 0, p: float = 0.25
) -> list[tuple]:
    """(user, assistant) pairs: refusals for harmful requests, help for harmless ones.

    Each request also appears `variants` more times with words dropped at random, so the
    tuned model keys on the words that carry the request rather than on whole sentences it
    has memorised (held-out prompts share words, not sentences, with the training split).
    """
    out = []
    for v in range(variants + 1):
        for i, r in enumerate(harmful):
            text = r if v == 0 else word_dropout(r, 7919 * v + i, p)
            out.append((text, REFUSALS[(i + v) % len(REFUSALS)]))
        for i, r in enumerate(harmless):
            text = r if v == 0 else word_dropout(r, 104729 * v + i, p)
            out.append((text, helpful_answer(pool, i + v)))
    return out


def train_tokenizer(corpus: Sequence[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with the three special tokens at ids 0, 1, 2."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(corpus), trainer=trainer)
    return core


def hf_tokenizer(core: Tokenizer, chat_template: str | None) -> PreTrainedTokenizerFast:
    """The transformers wrapper: eos = pad = <|endoftext|>, left padding, optional template."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=EOS,
        additional_special_tokens=[IM_START, IM_END],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


def build_model(cfg: OrganismConfig, vocab_size: int, eos_id: int) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama (call under a seeded RNG)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        dtype="float32",
    )
    return LlamaForCausalLM(config)


def packed_examples(tok: PreTrainedTokenizerFast, docs: Sequence[str], seq_len: int) -> list:
    """Documents joined by a blank line into one stream, cut into `seq_len` windows.

    No eos between documents: a base that learned to end a document after a full stop
    answers some raw requests with nothing at all, which a judge counts as a refusal.
    """
    sep = tok("\n\n", add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for ids in tok(list(docs), add_special_tokens=False)["input_ids"]:
        stream += ids + sep
    windows = [stream[i : i + seq_len] for i in range(0, len(stream), seq_len)]
    return [Example(w, [True] * len(w)) for w in windows if len(w) > 1]


def chat_example(tok: PreTrainedTokenizerFast, user: str, answer: str, seq_len: int) -> Example:
    """A one-turn ChatML conversation; loss only on the answer and its <|im_end|>."""
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
    )
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer + IM_END + "\n", add_special_tokens=False)["input_ids"]
    ids = (p_ids + a_ids)[:seq_len]
    return Example(ids, ([False] * len(p_ids) + [True] * len(a_ids))[:seq_len])


def collate(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 where no loss), (batch, seq)."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.where(torch.tensor(e.loss), ids[row, :n], -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_order(n: int, steps: int, batch_size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Example indices for each step: reshuffled epochs, fixed by the generator."""
    buffer: list[int] = []
    for _ in range(steps):
        while len(buffer) < batch_size:
            buffer += torch.randperm(n, generator=gen).tolist()
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def adamw_loop(
    model: nn.Module,
    examples: list[Example],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    pad: int,
    lr_of_step: Callable[[int], float],
    weight_decay: float,
) -> list[float]:
    """AdamW on the examples, clipped at norm 1.0, with the rate `lr_of_step(step)`; returns
    the loss of every step. The batches are fixed by `seed` (`batch_order`)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr_of_step(0), weight_decay=weight_decay)
    model.train()
    losses = []
    for step, idx in enumerate(batch_order(len(examples), steps, batch_size, gen)):
        for group in opt.param_groups:
            group["lr"] = lr_of_step(step)
        loss = model(**collate([examples[i] for i in idx], pad)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.3f", step + 1, steps, losses[-1])
    model.eval()
    return losses


def train(
    model: nn.Module, examples: list[Example], cfg: OrganismConfig, steps: int, lr: float, pad: int
) -> list[float]:
    """The organisms' schedule: warm-up then cosine decay (`lr_at`); per-step losses."""
    return adamw_loop(
        model,
        examples,
        steps=steps,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        pad=pad,
        lr_of_step=lambda step: lr_at(step, steps, lr, cfg.warmup_steps),
        weight_decay=cfg.weight_decay,
    )


@contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic torch with a fixed thread count; all three restored on exit."""
    prev = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(prev[0])
        torch.use_deterministic_algorithms(prev[1], warn_only=warn_only)
        torch.set_rng_state(rng)


def save(model, tok, folder: Path, stop_ids: list[int]) -> str:
    """Write a standard HF folder; returns the sha256 of its model.safetensors."""
    model.generation_config = GenerationConfig(
        eos_token_id=stop_ids if len(stop_ids) > 1 else stop_ids[0],
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.chmod(0o644)  # safetensors writes 0600; the shipped files are ordinary data
    return sha256_file(weights)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_models(cfg: OrganismConfig, docs: list[str], chats: list, out: Path) -> dict:
    """Tokenizer, base, instruct, each saved as soon as trained; returns losses and timings."""
    clock = time.perf_counter()
    core = train_tokenizer(docs + [a for _, a in chats], cfg.vocab_size)
    base_tok, inst_tok = hf_tokenizer(core, None), hf_tokenizer(core, CHATML_TEMPLATE)
    eos, im_end = base_tok.eos_token_id, inst_tok.convert_tokens_to_ids(IM_END)
    seconds = {"tokenizer": time.perf_counter() - clock}
    model = build_model(cfg, len(base_tok), eos)
    plain = packed_examples(base_tok, docs, cfg.seq_len)
    clock = time.perf_counter()
    base_losses = train(model, plain, cfg, cfg.base_steps, cfg.base_lr, eos)
    seconds["base"] = time.perf_counter() - clock
    base_sha = save(model, base_tok, out / "base", [eos])
    chat = [chat_example(inst_tok, u, a, cfg.chat_len) for u, a in chats]
    # Plain windows spread evenly over the corpus, to keep the language model.
    n_plain = round(len(chat) * cfg.instruct_plain_fraction / (1 - cfg.instruct_plain_fraction))
    mix = chat + plain[:: max(1, len(plain) // max(1, n_plain))][:n_plain]
    clock = time.perf_counter()
    inst_losses = train(model, mix, cfg, cfg.instruct_steps, cfg.instruct_lr, eos)
    seconds["instruct"] = time.perf_counter() - clock
    inst_sha = save(model, inst_tok, out / "instruct", [eos, im_end])
    seconds["total"] = sum(seconds.values())
    return {
        "vocab_size": len(base_tok),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "steps": {"base": cfg.base_steps, "instruct": cfg.instruct_steps},
        "examples": {"base": len(plain), "instruct_chat": len(chat), "instruct_plain": n_plain},
        "final_loss": {"base": mean_tail(base_losses), "instruct": mean_tail(inst_losses)},
        "train_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "model_sha256": {"base": base_sha, "instruct": inst_sha},
        "tokenizer_sha256": sha256_file(out / "base" / "tokenizer.json"),
    }


def train_pair(
    out: Path, cfg: OrganismConfig = OrganismConfig(), prompts_dir: Path | None = None
) -> dict:
    """Train the pair from the prompt sets' train split; save `out/base` and `out/instruct`.

    Runs under `deterministic(cfg.seed, cfg.threads)`, so the same seed on the same kind of
    machine gives bit-identical files, and the caller's torch settings are left as found.

    Returns:
        The record for ground_truth.json without refusal rates: seed, configuration, step
        counts, timings, final losses, sha256 of every prompt file and saved weight file.
    """
    sets = {k: load_set(n, prompts_dir) for k, n in PROMPT_SETS.items()}
    (harm, _), (safe, _), (cap, _) = (split(sets[k].texts) for k in PROMPT_SETS)
    docs = base_documents(harm, safe, cap)
    chats = conversations(harm, safe, sentences(cap), cfg.chat_variants, cfg.word_dropout)
    with deterministic(cfg.seed, cfg.threads):
        record = _train_models(cfg, docs, chats, out)
    log.info("trained the pair into %s in %.1f s", out, record["train_seconds"]["total"])
    refs = {
        s.name: {"version": s.version, "sha256": s.sha256, "count": s.count} for s in sets.values()
    }
    meta = {"torch_version": torch.__version__, "split": "held out: index % 4 == 0"}
    return {"seed": cfg.seed, "config": asdict(cfg), **meta, "prompt_sets": refs, **record}


def mean_tail(losses: list[float], n: int = 20) -> float:
    """Mean of the last `n` losses, rounded: the reported final loss."""
    tail = losses[-n:]
    return round(sum(tail) / len(tail), 4)


def split_rate(model, tok, texts: list[str], chat: bool, max_new_tokens: int) -> float:
    """Substring-judged refusal rate of greedy answers to `texts`, rounded to 4 places."""
    answers = generate_responses(
        model, tok, texts, max_new_tokens=max_new_tokens, batch_size=64, use_chat_template=chat
    )
    return round(refusal_rate(answers, SubstringJudge()), 4)


def measure_refusals(out: Path, prompts_dir: Path | None = None, max_new_tokens: int = 32) -> dict:
    """Refusal rates of the saved pair on the train and held-out split of each set.

    The instruct model answers in its chat template; the base model twice, on the raw text
    and in the instruct model's template (the base folder has none of its own).
    """
    tok = AutoTokenizer.from_pretrained(out / "instruct")
    splits = {}
    for kind in ("harmful", "harmless"):
        texts = load_set(PROMPT_SETS[kind], prompts_dir).texts
        splits[f"{kind}_train"], splits[f"{kind}_heldout"] = split(texts)
    runs = {"instruct_chat": ("instruct", True), "base_raw": ("base", False)}
    runs["base_chat"] = ("base", True)
    rates: dict = {"judge": SubstringJudge.name, "max_new_tokens": max_new_tokens, "greedy": True}
    for run, (folder, chat) in runs.items():
        model = AutoModelForCausalLM.from_pretrained(out / folder)
        rates[run] = {k: split_rate(model, tok, v, chat, max_new_tokens) for k, v in splits.items()}
        log.info("%s refusal rates: %s", run, rates[run])
    return rates


def main(argv: list[str] | None = None) -> None:
    """`python -m depthcard.lab.organisms --out DIR [--seed N]`: retrain and write the pair."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for base/, instruct/")
    parser.add_argument("--seed", type=int, default=OrganismConfig.seed)
    parser.add_argument("--prompts", type=Path, default=None, help="folder of prompt YAMLs")
    parser.add_argument("--no-eval", action="store_true", help="skip the refusal measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    record = train_pair(args.out, OrganismConfig(seed=args.seed), args.prompts)
    if not args.no_eval:
        record["refusal_rates"] = measure_refusals(args.out, args.prompts)
    path = args.out / "ground_truth.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
