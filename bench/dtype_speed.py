"""Benchmark: float32 against bfloat16 (and float16) matmuls on this CPU.

Run: `python bench/dtype_speed.py [--threads 1,2] [--model qwen-coder-0.5b|smollm2]`

1. `F.linear` of a (640 × 576) batch by a (1536 × 576) weight — SmolLM2-135M's MLP shape,
   a batch of 16 prompts of 40 tokens — in each dtype, GFLOP/s, best of 5 after a warm-up.
2. With `--model`, the audit's own dtype probe (`analysis.dtype_choice.measure_cpu_dtype`)
   on that real checkpoint's first batch: both times, the first-token KL and the choice.

Prints the CPU's name and its bf16 flags, since the answer depends on them: without AVX-512
BF16 or AMX a bf16 matmul is several times slower than fp32; with them it can be faster.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gflops(dtype, threads: int) -> float:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    x = torch.randn(640, 576).to(dtype)
    w = torch.randn(1536, 576).to(dtype)
    F.linear(x, w)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            F.linear(x, w)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * 640 * 576 * 1536 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--model", choices=("qwen-coder-0.5b", "smollm2"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    import torch

    from depthcard.analysis.dtype_choice import cpu_bf16_flags

    print(f"CPU: {cpu_name()}; bf16 flags: {', '.join(cpu_bf16_flags() or []) or 'none'}")
    print("| threads | float32 GFLOP/s | bfloat16 GFLOP/s | float16 GFLOP/s | bf16 ÷ fp32 |")
    print("|---|---|---|---|---|")
    for t in (int(x) for x in args.threads.split(",")):
        f32, b16, f16 = (gflops(d, t) for d in (torch.float32, torch.bfloat16, torch.float16))
        print(f"| {t} | {f32:.1f} | {b16:.1f} | {f16:.1f} | {b16 / f32:.2f} |")
    if args.model:
        from real_checkpoints import MODELS

        from depthcard.analysis.capture import tokenize_prompts
        from depthcard.analysis.dtype_choice import measure_cpu_dtype
        from depthcard.analysis.models import load_model
        from depthcard.analysis.pairing import load_tokenizer
        from depthcard.analysis.prompt_inputs import load_prompt_inputs

        torch.set_num_threads(max(int(x) for x in args.threads.split(",")))
        folder = MODELS[args.model]()
        tok = load_tokenizer(folder)
        prompts = load_prompt_inputs(max_prompts=16, seed=0)
        rows = tokenize_prompts(prompts.harmful.texts, "chat", tok, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        choice = measure_cpu_dtype(load_model(folder, "cpu", "float32"), rows, pad, 0.01)
        print(
            f"\n{args.model} first batch: float32 {choice.float32_seconds:.3f} s, bfloat16 "
            f"{choice.bfloat16_seconds:.3f} s, first-token KL {choice.first_token_kl:.2g} → "
            f"{choice.dtype} ({choice.reason})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
