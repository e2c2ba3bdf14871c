"""Check one Gemma-3-270M child's training recipe before the family is built with it.

    python bench/gemma_recipe_check.py --recipe shallow --steps 40 --lr 3e-4 [--k-max 2]

Trains (or reads from the family's cache) one child under the given training settings, then,
on the ground truth's held-out eval half of the audit prompts (`lab.gemma_calibration`):

* the child's own answers to harmful and harmless prompts, judged by the audit's three-way
  judge (refusal / compliance / broken, its NLL threshold calibrated on the child): a usable
  child refuses harmful requests, answers harmless ones fluently and does not refuse them;
* the strong attack of the ground truth (`lab.removal_ground_truth`) at k = 1..`--k-max`
  on every window layer plus weight orthogonalisation: the cheapest coherent removal and its
  first-token KL. A child whose one direction costs tens of nats at every layer has put its
  harmless behaviour in the same direction as its refusal (memorised), and calibrates nothing.

Prints a summary and writes `--out` (JSON) with every point and a few answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="shallow")
    p.add_argument("--deep-share", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-prompts", type=int, default=32, help="per set (half are evaluated)")
    p.add_argument("--k-max", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--layers", help="comma-separated window layers to attack (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from real_checkpoints import gemma3_270m
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from depthcard.analysis.gguf_import import default_cache
    from depthcard.analysis.judges import shares
    from depthcard.lab import gemma_calibration as cal
    from depthcard.lab import gemma_family as fam
    from depthcard.lab.organisms import deterministic
    from depthcard.lab.removal_ground_truth import cheapest, measure_ground_truth

    cache = default_cache() / "gemma-family"
    base = fam.template_base(gemma3_270m(), cache / "base-templated")
    spec = fam.ChildSpec(args.recipe, deep_share=args.deep_share, seed=args.seed)
    train = fam.TrainSettings(steps=args.steps, lr=args.lr, threads=args.threads)
    clock = time.perf_counter()
    (child,) = fam.build_family(base, (spec,), train, cache / "children")
    trained = time.perf_counter() - clock
    folder = fam.materialise_child(base, child, train, cache / "merged" / child.adapter_dir.name)
    plan = cal.GemmaPlan((spec,), train, args.max_prompts, args.max_new_tokens, args.k_max)
    with deterministic(0, args.threads):
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        clock = time.perf_counter()
        ev, bases = cal._evaluator(model, tok, plan)
        if args.layers:
            keep = {int(x) for x in args.layers.split(",")}
            bases = {la: v for la, v in bases.items() if la in keep}
        b = ev.measure_baseline()
        harmless, nll_h = ev.answers_and_nll(None, ev.data.harmless_texts)
        judged_h = ev.judge.classify(harmless, nll_h)
        truth = measure_ground_truth(ev, bases, args.k_max)
        measured = time.perf_counter() - clock
    own = {
        "harmful": shares([j.label for j in b.judged]),
        "harmless": shares([j.label for j in judged_h]),
    }
    best = cheapest(truth.points)
    out = {
        "child": child.name, "train": child.record, "train_seconds_now": round(trained, 1),
        "measure_seconds": round(measured, 1), "eval_prompts": len(b.answers),
        "own_answers": own, "nll_threshold": b.nll_threshold,
        "cheapest_coherent": best.model_dump() if best else None,
        "points": [pt.model_dump() for pt in truth.points],
        "examples": {
            "harmful": list(zip(ev.data.harmful_texts[:4], b.answers[:4], strict=True)),
            "harmless": list(zip(ev.data.harmless_texts[:6], harmless[:6], strict=True)),
        },
    }  # fmt: skip
    rec = child.record
    loss = f"loss {rec.get('first_loss')} → {rec.get('final_loss')}"
    took = f"trained {trained:.0f} s, measured {measured:.0f} s"
    print(f"{child.name}: steps {args.steps} lr {args.lr} {loss} ({took})")
    for role, got in own.items():
        print(f"  own answers, {role:8s}: " + ", ".join(f"{k} {v:.0%}" for k, v in got.items()))
    for pt in truth.points:
        mark = "  coherent" if pt.coherent else ""
        print(f"  {pt.method:14s} l{pt.layer:<2d} k{pt.k}: refusal {pt.refusal_share:.0%} "
              f"broken {pt.broken_share:.0%} KL {pt.kl:.3f}{mark}")  # fmt: skip
    print("  cheapest coherent:", f"{best.method} l{best.layer} k{best.k} KL {best.kl:.3f}"
          if best else "none")  # fmt: skip
    for role, pairs in out["examples"].items():
        for q, a in pairs:
            print(f"  [{role}] {q[:60]!r} → {a[:100]!r}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
