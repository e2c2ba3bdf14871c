"""The fragility stage's cost options, rerun on the audit's own child and refusals.

`bench/real_audit.py --fragility-options ...` uses this: inside one audit, right after the
default fragility stage (which is the "old" row), each option reruns the stage on the same
model, the same refusals and the same l*, timed as a whole and in its curvature part
(gradients and Hessian-vector products). Options compose with "+":

- `fwd-rev`: Hessian-vector products by forward over reverse (`hvp`);
- `rel-change`: the power iteration stops on a 1 % relative change of λ (`stop_rule`);
- `window-1`, `window-2`: θ_S from the blocks writing layers l* ± 1 or ± 2
  (`selected_window`), instead of the middle third;
- `all-blocks`: θ_S from every block (the same pattern): the set the window's sharpness is
  compared with, since the top eigenvalue of a sub-block of H is at most H's.

The hooks patch two private names of `analysis.audit` and `analysis.fragility` for the
duration of the run and restore them: a benchmark's instrument, not a library feature.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

OPTIONS: dict[str, dict] = {
    "fwd-rev": {"hvp": "forward-over-reverse"},
    "rel-change": {"stop_rule": "relative-change"},
    "window-1": {"selected_window": 1},
    "window-2": {"selected_window": 2},
    "all-blocks": {"layer_range": "all"},  # resolved against the model's block count
}
DEFAULT = "rel-change,fwd-rev+rel-change,window-2+rel-change,all-blocks+rel-change"


def settings_for(name: str, base, num_layers: int):
    """`base` (a FragilitySettings) with the options named in `name` ("a+b") applied."""
    update: dict = {}
    for part in name.split("+"):
        if part not in OPTIONS:
            raise SystemExit(f"unknown fragility option {part!r}; known: {', '.join(OPTIONS)}")
        update.update(OPTIONS[part])
    if update.get("layer_range") == "all":
        update["layer_range"] = (0, num_layers)
    return base.model_copy(update=update)


def row(name: str, section, seconds: float, curvature_seconds: float) -> dict:
    """What one run of the stage measured (section: a `Fragility`, or None with why)."""
    if section is None:
        return {"option": name, "seconds": seconds, "section": None}
    return {
        "option": name,
        "seconds": seconds,
        "curvature_seconds": curvature_seconds,
        "subset": section.parameter_subset,
        "parameters": section.parameter_count,
        "hvps": section.hessian_vector_products,
        "sharpness": section.sharpness,
        "sharpness_history": section.sharpness_history,
        "converged": section.sharpness_converged,
        "curvature_coupling": section.curvature_coupling,
        "exponent": section.exponent,
        "forecast_steps": section.forecast_steps,
        "no_forecast_reasons": section.no_forecast_reasons,
    }


@contextmanager
def rerun_fragility(names: list[str], rows: list[dict]) -> Iterator[None]:
    """Inside: every audit's fragility stage is followed by one rerun per option in `names`;
    the default stage's numbers and each rerun's are appended to `rows` as they finish."""
    from depthcard.analysis import audit as audit_module
    from depthcard.analysis import fragility as fragility_module
    from depthcard.analysis.fragility_stage import fragility_stage
    from depthcard.analysis.models import decoder_layers

    original_stage, original_curvature = audit_module._fragility, fragility_module._curvature
    clock = {"curvature": 0.0}

    def timed_curvature(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original_curvature(*args, **kwargs)
        finally:
            clock["curvature"] += time.perf_counter() - start

    def with_options(model, tokenizer, tok, outcome, cfg, layers_path, timings):
        clock["curvature"] = 0.0
        section = original_stage(model, tokenizer, tok, outcome, cfg, layers_path, timings)
        mine = next((t for t in reversed(timings) if t.name == "fragility"), None)
        if mine is None or not hasattr(section, "sharpness"):
            return section  # no stage ran (no refusals): nothing to compare
        rows.append(row("old (defaults)", section, mine.seconds, clock["curvature"]))
        _print_row(rows[-1])
        selected = outcome.selected.layer
        blocks = len(decoder_layers(model, layers_path))
        for name in names:
            settings = settings_for(name, cfg.fragility, blocks)
            clock["curvature"] = 0.0
            start = time.perf_counter()
            other, _ = fragility_stage(
                model, tokenizer, tok, outcome.refusals, settings, layers_path, selected
            )
            rows.append(row(name, other, time.perf_counter() - start, clock["curvature"]))
            _print_row(rows[-1])
        return section

    audit_module._fragility, fragility_module._curvature = with_options, timed_curvature
    try:
        yield
    finally:
        audit_module._fragility, fragility_module._curvature = original_stage, original_curvature


def _print_row(r: dict) -> None:
    if r.get("section", True) is None:
        print(f"fragility {r['option']}: no section ({r['seconds']:.1f} s)", flush=True)
        return
    print(
        f"fragility {r['option']}: λ {r['sharpness']:.6g} after {r['hvps']} HVPs "
        f"({r['curvature_seconds']:.1f} s of {r['seconds']:.1f} s), p {r['exponent']}",
        flush=True,
    )


def _num(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def table(rows: list[dict], bare: float) -> list[str]:
    """Markdown: one line per option, the old stage first."""
    old = rows[0]["sharpness"] if rows else None
    lines = [
        "| fragility option | θ_S | parameters | HVPs | sharpness λ | λ ÷ old | converged "
        "| exponent p | forecast steps | curvature s | stage s | × bare forward |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("section", True) is None:
            lines.append(f"| {r['option']} | no section | | | | | | | | | {r['seconds']:.1f} | |")
            continue
        ratio = r["sharpness"] / old if old else None
        lines.append(
            f"| {r['option']} | {r['subset']} | {r['parameters']:,} | {r['hvps']} "
            f"| {r['sharpness']:.6g} | {_num(ratio, '.4f')} | {r['converged']} "
            f"| {_num(r['exponent'], '.3g')} | {_num(r['forecast_steps'], '.3g')} "
            f"| {r['curvature_seconds']:.1f} | {r['seconds']:.1f} | {r['seconds'] / bare:.1f} |"
        )
    return lines + [""]
