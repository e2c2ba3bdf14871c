"""Benchmark: what the nulls, placebos and bootstrap intervals cost, beside the spectra stage.

Run: `python bench/nulls.py [--prompts 48] [--max-new-tokens 24] [--base DIR --child DIR]`

Runs one in-process audit on the bundled calibration pair (the demo) and reads the report's
own stage timings: the `nulls` stage (depth permutation null with `permutations`, placebo
splits, `bootstraps` resamples; no forward passes) against the `spectra` stage (ranks and
directions at every layer), as a ratio. Also prints the headline, so a change in the demo's
numbers can be read off the same run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    import torch

    from depthcard.analysis.audit import DEMO_DIR, run_audit
    from depthcard.analysis.models import parse_model_spec
    from depthcard.analysis.prompt_inputs import load_prompt_inputs
    from depthcard.schemas.report import AuditConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--base", default=str(DEMO_DIR / "base"))
    p.add_argument("--child", default=str(DEMO_DIR / "instruct"))
    args = p.parse_args()
    cfg = AuditConfig(max_prompts=args.prompts, max_new_tokens=args.max_new_tokens)
    run = run_audit(
        base=parse_model_spec(args.base),
        child=parse_model_spec(args.child),
        prompts=load_prompt_inputs(max_prompts=args.prompts, seed=0),
        cfg=cfg.with_concrete_dtype(torch.cuda.is_available()),
    )
    seconds = {s.name: s.seconds for s in run.report.stages}
    print(f"{'stage':<16} seconds")
    for name, s in seconds.items():
        print(f"{name:<16} {s:8.2f}")
    ratio = seconds["nulls"] / max(seconds["spectra"], 1e-9)
    print(
        f"\nnulls ({cfg.permutations} permutations, {cfg.bootstraps} bootstraps): "
        f"{seconds['nulls']:.2f} s = {ratio:.2f} × spectra ({seconds['spectra']:.2f} s)"
    )
    print(json.dumps(run.report.headline.model_dump(), indent=1))
    print(json.dumps(run.report.selected_layer.model_dump(), indent=1))


if __name__ == "__main__":
    main()
