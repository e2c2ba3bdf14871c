"""Benchmark: where an audit's time goes, and what batching buys the ablation stage.

Run: `python bench/stages.py [--prompts 48] [--max-new-tokens 64] [--base DIR --child DIR]`

Two measurements in one run, on the same model and prompts (default: the bundled
calibration pair):

1. An in-process audit (`analysis.audit.run_audit`) with `--prompts` per set; its per-stage
   seconds come from the report itself, so the table shows the ablation stage beside the
   capture stages, as a ratio to capturing the child.
2. Greedy generation of the harmful prompts (what the refusal judge reads, and the bulk of
   the ablation stage): `generate_responses` batched by length (batch 16) against the same
   function one prompt at a time (batch 1), the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _inputs(n: int):
    from depthcard.analysis.prompt_inputs import load_prompt_inputs

    return load_prompt_inputs(max_prompts=n, seed=0)


def audit_stages(base: str, child: str, n: int, max_new_tokens: int) -> dict[str, float]:
    """Seconds per stage of one audit (from the report's own timings)."""
    import torch

    from depthcard.analysis.audit import run_audit
    from depthcard.analysis.models import parse_model_spec
    from depthcard.schemas.report import AuditConfig

    cfg = AuditConfig(max_prompts=n, max_new_tokens=max_new_tokens)
    run = run_audit(
        base=parse_model_spec(base),
        child=parse_model_spec(child),
        prompts=_inputs(n),
        cfg=cfg.with_concrete_dtype(torch.cuda.is_available()),
    )
    return {s.name: s.seconds for s in run.report.stages}


def generation_seconds(child: str, n: int, max_new_tokens: int) -> dict[str, float]:
    """Seconds to answer the harmful prompts greedily, batched (16) and one at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from depthcard.analysis.generation import generate_responses

    model = AutoModelForCausalLM.from_pretrained(child)
    tok = AutoTokenizer.from_pretrained(child)
    texts = _inputs(n).harmful.texts
    out = {}
    for name, batch in (("one at a time", 1), ("batched (16)", 16)):
        start = time.perf_counter()
        generate_responses(model, tok, texts, max_new_tokens=max_new_tokens, batch_size=batch)
        out[name] = time.perf_counter() - start
    return out


def render(stages: dict[str, float], gen: dict[str, float], n: int, new: int) -> str:
    """Two Markdown tables: stages against capture-child, generation against batch 1."""
    ref = stages.get("capture-child") or 1e-9
    lines = [
        f"Audit stages ({n} prompts per set, {new} new tokens per answer):",
        "",
        "| stage | seconds | × capture-child |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.2f} | {v / ref:.1f} |" for k, v in stages.items()]
    one = gen["one at a time"]
    lines += [
        "",
        f"Greedy generation of {n} harmful prompts × {new} tokens:",
        "",
        "| method | seconds | speed-up vs one at a time |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.2f} | {one / v:.2f} |" for k, v in gen.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--base", default=str(ROOT / "analysis" / "calibration" / "base"))
    parser.add_argument("--child", default=str(ROOT / "analysis" / "calibration" / "instruct"))
    args = parser.parse_args()
    stages = audit_stages(args.base, args.child, args.prompts, args.max_new_tokens)
    gen = generation_seconds(args.child, args.prompts, args.max_new_tokens)
    print(render(stages, gen, args.prompts, args.max_new_tokens))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
