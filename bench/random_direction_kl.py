"""How much does ablating a random direction cost a real model? The audit's KL placebo, measured.

    python bench/random_direction_kl.py [--model qwen-coder-0.5b] [--child DIR] [--layers 8,12]

For one model, on the eval half of the audit's harmless prompts (chat format, the audit's
split): the first-token KL of ablating one random direction at every residual point (the
audit's placebo, `analysis.ablation_cost.random_ablation`'s draws), and of ablating the
model's own harmful − harmless difference in means r̂_l (fit half) at the given layers, with
the share of eval harmful prompts it still refuses (substring judge, 24 greedy tokens) and the
share of r̂'s squared norm on the outlier coordinates. Also
the residual stream's outlier coordinates: those whose largest |h| over the window's points
is more than 100× the median coordinate's mean |h| (massive activations).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("qwen-coder-0.5b", "gemma-3-270m", "smollm2")


def model_folder(name: str) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    import real_checkpoints as rc

    if name == "gemma-3-270m":
        from depthcard.analysis.gguf_import import default_cache
        from depthcard.lab import gemma_family as fam

        return fam.template_base(
            rc.gemma3_270m(), default_cache() / "gemma-family" / "base-templated"
        )
    return {"qwen-coder-0.5b": rc.qwen_coder_05b, "smollm2": rc.smollm2}[name]()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, default="qwen-coder-0.5b")
    p.add_argument("--child", type=Path, help="a model folder instead of --model's")
    p.add_argument("--layers", default="", help="comma-separated layers for r̂ (default: middle)")
    p.add_argument("--prompts", type=int, default=32, help="per set (half are evaluated)")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from depthcard.analysis.ablation import ablated, first_token_logprobs, mean_kl
    from depthcard.analysis.ablation_cost import placebo_kl
    from depthcard.analysis.capture import pad_left, tokenize_prompts
    from depthcard.analysis.generation import generate_responses
    from depthcard.analysis.judges import get_judge, refusal_rate
    from depthcard.analysis.models import decoder_layers
    from depthcard.analysis.prompt_inputs import load_prompt_inputs, split_indices
    from depthcard.lab.chat_tuning import rows_no_grad

    torch.set_num_threads(args.threads)
    folder = args.child or model_folder(args.model)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    layers, d = decoder_layers(model), model.config.hidden_size
    n_layers = len(layers)
    sets = load_prompt_inputs(max_prompts=args.prompts, seed=0)
    both = (sets.harmful, sets.harmless)
    halves = {s.name: split_indices(s.categories, 0.5, 0, s.name) for s in both}
    pick = lambda s, h: [s.texts[i] for i in halves[s.name][h]]  # noqa: E731
    ids = lambda t: tokenize_prompts(t, "chat", tok, tok)  # noqa: E731
    fit_s, fit_h = ids(pick(sets.harmful, 0)), ids(pick(sets.harmless, 0))
    eval_s_text, eval_h = pick(sets.harmful, 1), ids(pick(sets.harmless, 1))
    pad = tok.pad_token_id
    clock = time.perf_counter()

    def logp(basis):
        with torch.no_grad(), ablated(layers, basis):
            return first_token_logprobs(model, eval_h, pad, 16, False)

    ref = logp(None)
    random_kl = placebo_kl(logp, ref, d, 1, args.draws)  # the audit's k = 1 draws
    x, mask, pos = pad_left(eval_h, pad, torch.device("cpu"))
    with torch.no_grad():
        hs = model.base_model(input_ids=x, attention_mask=mask, position_ids=pos,
                              output_hidden_states=True).hidden_states  # fmt: skip
    rows = torch.cat([h[mask.bool()] for h in hs[1:n_layers]]).abs()
    ratio = rows.max(0).values / rows.mean(0).median()
    outliers = {int(i): round(float(ratio[i])) for i in (ratio > 100).nonzero().flatten()}
    chosen = [int(v) for v in args.layers.split(",") if v] or [n_layers // 2]
    judge = get_judge("substring")
    points = sorted(set(chosen))
    s_rows = rows_no_grad(model, fit_s, pad, points)
    h_rows = rows_no_grad(model, fit_h, pad, points)
    refusal = []
    base_answers = generate_responses(model, tok, eval_s_text, max_new_tokens=24, batch_size=16)
    for j, layer in enumerate(points):
        r = s_rows[:, j].mean(0) - h_rows[:, j].mean(0)
        basis = (r / r.norm()).double()[:, None]
        with ablated(layers, basis):
            answers = generate_responses(model, tok, eval_s_text, max_new_tokens=24, batch_size=16)
        on_outliers = float((basis[list(outliers), 0] ** 2).sum()) if outliers else 0.0
        refusal.append({"layer": layer, "kl": mean_kl(ref, logp(basis)),
                        "refusal": refusal_rate(answers, judge),
                        "outlier_share": on_outliers})  # fmt: skip
    out = {
        "model": str(folder.name), "cpu": platform.processor() or platform.machine(),
        "d": d, "eval_harmless": len(eval_h), "eval_harmful": len(eval_s_text),
        "random_kl": random_kl, "outlier_coordinates": outliers,
        "baseline_refusal": refusal_rate(base_answers, judge), "refusal_direction": refusal,
        "seconds": round(time.perf_counter() - clock, 1),
    }  # fmt: skip
    lo, hi = min(random_kl), max(random_kl)
    cells = "; ".join(
        f"l{r['layer']}: {r['kl']:#.3g} (refusal {r['refusal']:.0%}, "
        f"{r['outlier_share']:.0%} on outliers)"
        for r in refusal
    )
    big = ", ".join(f"{i} ({v}×)" for i, v in outliers.items()) or "none"
    print(f"| {out['model']} | {d} | {lo:#.3g}–{hi:#.3g} | {cells} | "
          f"{out['baseline_refusal']:.0%} | {big} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
