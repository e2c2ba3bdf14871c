"""Benchmark: each kind of audit work in bfloat16 against float32 on this CPU, on a real model.

Run: `python bench/stage_precision.py [--model qwen-coder-0.5b|smollm2] [--prompts 16]`

The audit's dtype probe decides on one first-token batch (analysis/dtype_choice.py); this
script times and compares every kind of work the stages do, on the first `--prompts` harmful
prompts of the project's set, in chat format, with 2 torch threads unless OMP says otherwise:

1. **first-token passes** (layer search, bootstrap, curve): plain and with the cached
   chat-template opening; the cache's largest probability gap against the plain pass, the
   plain pass's own layout gap (each prompt run alone), and whether the audit keeps the cache
   (analysis/prefix_cache.py); bfloat16's gap and mean KL against float32;
2. **generation** (judged points): greedy answers of 64 tokens; how many are identical;
3. **Hessian-vector products** (fragility): over the prompts with their float32 answers as
   responses, θ_S the default subset; time and cos(H v) between the dtypes; in float32 also
   the product with the graphs kept (`RetainedHessian`: first and later calls) and the
   process's peak memory, as analysis/fragility.py decides when to keep them.

Every pass is timed once after a warm-up pass of the same kind on a few prompts; the machine
should be otherwise idle. Prints the CPU and its bf16 flags, since the answer depends on them.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("qwen-coder-0.5b", "smollm2"), default="qwen-coder-0.5b")
    p.add_argument("--prompts", type=int, default=16)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from dtype_speed import cpu_name
    from real_checkpoints import MODELS

    from depthcard.analysis import prefix_cache as pc
    from depthcard.analysis.ablation import _logp, _row_by_row, first_token_logprobs
    from depthcard.analysis.ablation import plain_last_logits as plain_logits
    from depthcard.analysis.capture import tokenize_prompts
    from depthcard.analysis.curvature import (
        RetainedHessian,
        dot,
        hessian_vector_product,
        norm,
        random_unit,
    )
    from depthcard.analysis.dtype_choice import cpu_bf16_flags
    from depthcard.analysis.fragility import loss_terms, scored_batches
    from depthcard.analysis.fragility_stage import refusal_rows
    from depthcard.analysis.fragility_subset import select_parameters
    from depthcard.analysis.generation import generate_responses
    from depthcard.analysis.models import load_model
    from depthcard.analysis.pairing import load_tokenizer
    from depthcard.analysis.prompt_inputs import load_prompt_inputs
    from depthcard.schemas.sections import FragilitySettings

    folder = MODELS[args.model]()
    tok = load_tokenizer(folder)
    texts = load_prompt_inputs(max_prompts=args.prompts, seed=0).harmful.texts
    ids = tokenize_prompts(texts, "chat", tok, tok)  # in text order, as the answers are
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cpu = torch.device("cpu")
    flags = ", ".join(cpu_bf16_flags() or []) or "none"
    print(f"{args.model} on {cpu_name()} (bf16 flags: {flags}; {torch.get_num_threads()} "
          f"threads), {len(ids)} harmful prompts in chat format\n")  # fmt: skip
    rows, got = [], {}
    answers: list[str] = []
    for name in ("float32", "bfloat16"):
        model = load_model(folder, "cpu", name).eval()
        with torch.inference_mode():
            plain = _logp(plain_logits(model, ids, pad, cpu))
            alone = _row_by_row(model, ids, pad, cpu)
            n = pc.shared_prefix_length(ids)
            cache = pc.opening_cache(model, ids[0][:n], cpu)
            suffixes = [r[n:] for r in ids]
            cached = _logp(pc.last_logits_after(model, cache, suffixes, pad, n, cpu))
        gap, layout = pc.probability_gap(cached, plain), pc.probability_gap(alone, plain)
        keep = gap <= pc.allowed_gap(layout if gap > pc.TOLERANCE else None)
        first_token_logprobs(model, ids[:4], pad, 16, reuse_opening=False)  # warm-up
        t_plain, _ = timed(first_token_logprobs, model, ids, pad, 16, False)
        setattr(model, pc._VERDICT, keep)
        t_cache, _ = timed(first_token_logprobs, model, ids, pad, 16, True)
        generate_responses(model, tok, texts[:2], max_new_tokens=4)  # warm-up
        t_gen, gen = timed(generate_responses, model, tok, texts, max_new_tokens=64)
        answers = answers or gen
        seqs, lengths = refusal_rows(ids, dict(enumerate(answers)), tok)
        settings = FragilitySettings()
        _, params = select_parameters(model, settings)
        for q in model.parameters():
            q.requires_grad_(False)
        for q in params:
            q.requires_grad_(True)
        batches = scored_batches(seqs, lengths, pad, settings.batch_size, cpu)
        v = random_unit(params, 0)
        terms = loss_terms(model, batches)
        t_hvp, hv = timed(hessian_vector_product, terms, params, v)
        got[name] = (plain, gen, hv)
        rows.append((name, gap, layout, keep, t_plain, t_cache if keep else None, t_gen, t_hvp))
        if name == "float32":
            before = peak_gb()
            kept = RetainedHessian(terms, params)
            t_first, _ = timed(kept, v)
            t_later, again = timed(kept, v)
            same = all(torch.equal(a, b) for a, b in zip(again, hv, strict=True))
            tokens = sum(int(b.input_ids.numel()) for b in batches)
            retained = (tokens, before, peak_gb(), t_first, t_later, same)
            kept.release()
        del model
    (pf, gf, hf), (pb, gb, hb) = got["float32"], got["bfloat16"]
    kl = float((pf.exp() * (pf - pb)).sum(-1).mean())
    cos = dot(hf, hb) / (norm(hf) * norm(hb))
    print("| dtype | cache gap | layout gap | cache kept | first-token plain s | with cache s "
          "| generate 64 tokens s | HVP s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, gap, layout, keep, tp, tc, tg, th in rows:
        with_cache = "—" if tc is None else f"{tc:.2f}"
        print(f"| {name} | {gap:.2g} | {layout:.2g} | {'yes' if keep else 'no'} | {tp:.2f} | "
              f"{with_cache} | {tg:.2f} | {th:.2f} |")  # fmt: skip
    same = sum(a == b for a, b in zip(gf, gb, strict=True))
    print(
        f"\nbfloat16 against float32: first-token probability gap "
        f"{pc.probability_gap(pb, pf):.2g}, mean KL {kl:.2g}; identical greedy answers "
        f"{same} of {len(gf)}; cos(H v) {cos:.5f}, |H v| ratio {norm(hb) / norm(hf):.4f}"
    )
    tokens, before, after, t_first, t_later, equal = retained
    print(f"\nfloat32 HVP with the graphs kept ({tokens} padded tokens): first {t_first:.1f} s, "
          f"later {t_later:.1f} s (rebuilt each time: {rows[0][7]:.1f} s); process peak "
          f"{before:.1f} → {after:.1f} GB; equal to the rebuilt product: {equal}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
