"""Erode an instruct organism: a benign fine-tune that wears its alignment down.

A fine-tune on plain, harmless text — no refusals, no harmful requests — is known to erode
safety alignment (seed 002). This module makes such a fine-tune of a calibration organism
on CPU in seconds, so the three-model audit (`depthcard audit BASE CHILD --third FT`) and
the calibration suite have a fine-tune whose erosion we caused ourselves.

Recipe: next-token training (loss on every token) on the `capability-core` passages,
packed into windows exactly as the organisms' pretraining does; AdamW, a short linear
warm-up then a constant rate, gradient clipping at 1.0; run under
`lab.organisms.deterministic(seed, threads)`. The tokenizer and chat template are the
instruct folder's, unchanged; the weights are written as safetensors.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from depthcard import prompts
from depthcard.lab.organisms import (
    adamw_loop,
    deterministic,
    mean_tail,
    packed_examples,
    sha256_file,
)

log = logging.getLogger(__name__)

BENIGN_SET = "capability-core"
SEQ_LEN = 64
WARMUP_STEPS = 10
_COPIED = ("generation_config.json", "chat_template.jinja")


def _train(model, examples, steps: int, lr: float, batch_size: int, seed: int, pad: int) -> list:
    """AdamW on `examples` for `steps` steps (warm-up, then constant lr); per-step losses."""
    return adamw_loop(
        model,
        examples,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        pad=pad,
        lr_of_step=lambda step: lr * min(1.0, (step + 1) / WARMUP_STEPS),
        weight_decay=0.0,
    )


def erode_organism(
    instruct_dir: Path,
    out: Path,
    steps: int,
    lr: float,
    seed: int = 0,
    *,
    threads: int = 1,
    batch_size: int = 16,
) -> dict:
    """Fine-tune the organism in `instruct_dir` on benign text and save it to `out`.

    Args:
        instruct_dir: an HF folder of an instruct organism (tokenizer with chat template).
        out: folder to write (created); a standard HF folder, safetensors weights.
        steps: optimiser steps (0 copies the model unchanged, re-saved).
        lr: peak AdamW learning rate.
        seed: torch seed for the batch order (and anything else random).
        threads: torch threads while training (bit-identical only at the same count).
        batch_size: windows per step.

    Returns:
        A record: settings, examples, first/final loss, seconds, weight sha256.
    """
    instruct_dir, out = Path(instruct_dir), Path(out)
    if steps < 0 or not lr > 0:
        raise ValueError(f"steps must be >= 0 and lr > 0, got steps={steps}, lr={lr}")
    tok = AutoTokenizer.from_pretrained(instruct_dir)
    texts = prompts.load_builtin(BENIGN_SET).texts
    examples = packed_examples(tok, texts, SEQ_LEN)
    clock = time.perf_counter()
    with deterministic(seed, threads):
        model = AutoModelForCausalLM.from_pretrained(instruct_dir, dtype=torch.float32)
        losses = _train(model, examples, steps, lr, batch_size, seed, tok.pad_token_id)
    seconds = time.perf_counter() - clock
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for name in _COPIED:
        if (instruct_dir / name).is_file():
            shutil.copyfile(instruct_dir / name, out / name)
    weights = out / "model.safetensors"
    weights.chmod(0o644)
    record = {
        "parent": str(instruct_dir),
        "data": BENIGN_SET,
        "steps": steps,
        "lr": lr,
        "seed": seed,
        "threads": threads,
        "batch_size": batch_size,
        "examples": len(examples),
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": mean_tail(losses) if losses else None,
        "train_seconds": round(seconds, 2),
        "model_sha256": sha256_file(weights),
    }
    (out / "erosion.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("eroded %s into %s: %d steps, loss %s", instruct_dir, out, steps, record["final_loss"])
    return record
