"""The demo's pinned numbers: what is pinned, how closely, and the tool that takes the pin.

A pinned float moves between machines: float32 sums reduce in a different order under AVX-512
than under AVX2, and in a different order again with another BLAS thread count. A pin must
hold on every x86-64 CPU torch supports and every thread count, so its tolerance is measured,
not guessed: `update` runs the demo audit under each CPU variant below (thread counts, vector
kernels limited to AVX2, and the model weights perturbed by 1e-5 relative), and gives every
float leaf

    tolerance = max(SAFETY × spread over the rounding variants, REL_FLOOR × |value|, ABS_FLOOR)

REL_FLOOR is 2^10 float32 units in the last place (1024 × 2^-24 ≈ 6e-5, rounded up to 1e-4):
the worst-case relative error of a float32 dot product of length 1024, longer than any
reduction in the tiny pair's forward pass (d_model 64, at most 80 prompts). Discrete leaves
(counts, layer numbers, min_k, rules, strings) are pinned exactly, and only if every variant,
the perturbed one included, agrees: a discrete outcome that a 1e-5 perturbation flips is a
finding about the method, and `update` refuses to pin it (it names the path).

    python -m tests.demo_pin check    # each variant against tests/data/demo_pin.json
    python -m tests.demo_pin update   # re-pin (the note says why; keep it honest)

`check` is the command the README's development notes give for checking pins before a
commit; it takes about four minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PIN = Path(__file__).parent / "data" / "demo_pin.json"
DEMO_ARGS = ["--max-prompts", "48", "--max-new-tokens", "24", "--dtype", "float32"]
SAFETY = 10.0
REL_FLOOR = 1e-4
ABS_FLOOR = 1e-7
PERTURBATION = 1e-5
# the vector kernels limited to AVX2, as on a CPU without AVX-512
AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
# name → (environment, weight perturbation). The first is the reference the pin's values come
# from; the perturbed variant only decides which discrete leaves may be pinned.
VARIANTS: dict[str, tuple[dict[str, str], float]] = {
    "threads-2": ({"OMP_NUM_THREADS": "2"}, 0.0),
    "threads-1": ({"OMP_NUM_THREADS": "1"}, 0.0),
    "avx2-threads-2": ({"OMP_NUM_THREADS": "2", **AVX2}, 0.0),
    "avx2-threads-1": ({"OMP_NUM_THREADS": "1", **AVX2}, 0.0),
    "perturbed": ({"OMP_NUM_THREADS": "2"}, PERTURBATION),
}


def pinned_view(report: dict) -> dict:
    """The part of a demo report.json that is pinned."""
    return {
        "headline": report["headline"],
        "selected_layer": report["selected_layer"],
        "layers": [
            {
                "layer": m["layer"],
                "norm_ratio": m["norm_ratio"],
                "recovery_cosine": m["recovery_cosine"],
                "rho": {n: [x["rho"] for x in s["uncentered"]] for n, s in m["ranks"].items()},
            }
            for m in report["layers"]
        ],
        # samples_sha256 hashes the stored answers with their float NLLs: rounding moves it
        "ablation": {k: v for k, v in report["ablation"].items() if k != "samples_sha256"},
        "depth": report["depth"],
        "fragility": report["fragility"],
    }


def leaves(tree, path: str = "report"):
    """(path, value) for every leaf of a JSON tree, in a stable order."""
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from leaves(tree[key], f"{path}.{key}")
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, tree


def _is_float(value) -> bool:
    return isinstance(value, float) and not isinstance(value, bool)


def compare(got: dict, pin: dict, discrete_only: bool = False) -> list[str]:
    """Every leaf of `got` that is not within its pinned tolerance, one line each
    (`discrete_only`: floats are not compared, for the perturbed variant)."""
    want, tol = dict(leaves(pin["values"])), pin["tolerance"]
    have = dict(leaves(got))
    bad = [f"{p}: missing" for p in want if p not in have]
    bad += [f"{p}: not pinned (re-pin)" for p in have if p not in want]
    for path, w in want.items():
        if path not in have:
            continue
        g = have[path]
        if path in tol and _is_float(w) and isinstance(g, float | int):
            if not discrete_only and not abs(g - w) <= tol[path]:
                bad.append(f"{path}: got {g!r}, want {w!r} ± {tol[path]:.2g}")
        elif g != w:
            bad.append(f"{path}: got {g!r}, want {w!r} (exact)")
    return bad


def take_pin(views: dict[str, dict], note: str) -> dict:
    """The pin from the variants' views: values of the first, tolerances from the spread.

    Raises:
        SystemExit: a discrete leaf differs between variants (it cannot be pinned).
    """
    names = list(views)
    flat = {n: dict(leaves(v)) for n, v in views.items()}
    ref = flat[names[0]]
    rounding = [n for n in names if VARIANTS[n][1] == 0.0]
    tolerance, flips = {}, []
    for path, value in ref.items():
        seen = [flat[n].get(path) for n in names]
        if _is_float(value):
            vals = [flat[n][path] for n in rounding]
            spread = max(vals) - min(vals)
            floor = max(REL_FLOOR * abs(value), ABS_FLOOR)
            tolerance[path] = float(f"{max(SAFETY * spread, floor):.3g}")
            if not all(_is_float(s) and math.isfinite(s) for s in seen):
                flips.append(f"{path}: {seen}")
        elif any(s != value for s in seen):
            by_variant = (f"{n}={s!r}" for n, s in zip(names, seen, strict=True))
            flips.append(f"{path}: " + ", ".join(by_variant))
    if flips:
        print("discrete outcomes that a variant flips (a finding about the method):")
        print("\n".join("  " + f for f in flips))
        raise SystemExit(1)
    return {"note": note, "variants": names, "values": views[names[0]], "tolerance": tolerance}


def run_variant(name: str, out: Path) -> dict:
    """The pinned view of one demo audit run in a subprocess under the variant's settings."""
    env_update, perturb = VARIANTS[name]
    env = {**os.environ, **env_update}
    cmd = [sys.executable, "-m", "tests.demo_pin", "run", str(out), "--perturb", str(perturb)]
    done = subprocess.run(cmd, env=env, cwd=Path(__file__).parent.parent, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{done.stderr.decode()[-4000:]}")
    return pinned_view(json.loads((out / "report.json").read_text(encoding="utf-8")))


def _run(out: Path, perturb: float) -> None:
    """`depthcard audit --demo` in this process, weights perturbed when `perturb` > 0."""
    import torch

    from depthcard.analysis import audit
    from depthcard.cli.main import main

    if perturb > 0:
        plain = audit.load_model

        def perturbed(*args, **kwargs):
            model = plain(*args, **kwargs)
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + perturb * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            return model

        audit.load_model = perturbed
    args = ["audit", "--demo", "--out", str(out), "--overwrite", "--progress", "off"]
    code = main([*args, *DEMO_ARGS])
    if code != 0:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.demo_pin", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="run every variant and compare it with the pin")
    up = sub.add_parser("update", help="run every variant and write a new pin")
    up.add_argument("--note", required=True, help="why the pinned numbers moved")
    run = sub.add_parser("run", help=argparse.SUPPRESS)
    run.add_argument("out", type=Path)
    run.add_argument("--perturb", type=float, default=0.0)
    args = p.parse_args(argv)
    if args.cmd == "run":
        _run(args.out, args.perturb)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        views = {n: run_variant(n, Path(tmp) / n) for n in VARIANTS}
    if args.cmd == "update":
        PIN.write_text(json.dumps(take_pin(views, args.note), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {PIN}")
        return 0
    pin = json.loads(PIN.read_text(encoding="utf-8"))
    failed = 0
    for name, view in views.items():
        bad = compare(view, pin, discrete_only=VARIANTS[name][1] > 0)
        print(f"{name}: {'ok' if not bad else f'{len(bad)} off'}")
        print("\n".join("  " + b for b in bad[:20]))
        failed += bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
