"""Time the Gemma family's unit costs on the real base: LoRA steps, first-token passes,
greedy tokens; float32, and the forward pass in bfloat16 for comparison.

    OMP_NUM_THREADS=2 python bench/gemma_family_timing.py [--steps 3] [--threads 2]

Prints one JSON object; `lab/gemma_calibration.py`'s per-unit constants come from it.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from depthcard.analysis.ablation import first_token_logprobs
from depthcard.analysis.capture import tokenize_prompts
from depthcard.analysis.generation import generate_responses
from depthcard.analysis.gguf_import import default_cache
from depthcard.lab import gemma_family as fam
from depthcard.lab import lora
from depthcard.lab.chat_tuning import AnswerLoss, chat_examples
from depthcard.lab.organisms import collate
from depthcard.prompts import load_builtin


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = default_cache()
    base = fam.template_base(
        cache / "gemma-3-270m-q4_k_m", cache / "gemma-family" / "base-templated"
    )
    tok = AutoTokenizer.from_pretrained(base)
    out: dict = {"threads": args.threads}
    clock = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    out["load_s"] = round(time.perf_counter() - clock, 2)
    prompts = load_builtin("harmful-core").texts[:8]
    ids = tokenize_prompts(prompts, "chat", tok, tok)
    for dtype in (torch.float32, torch.bfloat16):
        m = model.to(dtype)
        first_token_logprobs(m, ids, tok.pad_token_id, 8)  # warm-up
        clock = time.perf_counter()
        first_token_logprobs(m, ids, tok.pad_token_id, 8)
        out[f"first_token_8_{str(dtype)[6:]}_s"] = round(time.perf_counter() - clock, 3)
    model = model.to(torch.float32)
    clock = time.perf_counter()
    generate_responses(model, tok, prompts, max_new_tokens=16, batch_size=8)
    out["generate_8x16_s"] = round(time.perf_counter() - clock, 2)
    settings = fam.TrainSettings()
    lora.add_lora(model, settings.targets, settings.rank, settings.alpha, seed=0)
    convs = fam.ChildSpec("deep-recovery", deep_share=1.0).conversations()
    examples = chat_examples(tok, convs, fam.END_OF_TURN, settings.max_len)
    loss_of = AnswerLoss(model)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    out["trainable_params"] = sum(q.numel() for q in params)
    times = []
    for step in range(args.steps):
        batch = collate(examples[step * 8 : step * 8 + 8], tok.pad_token_id)
        clock = time.perf_counter()
        loss = loss_of(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(round(time.perf_counter() - clock, 2))
    out["train_step_s"] = times
    out["train_tokens_per_step"] = int(batch["attention_mask"].sum())
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
