"""The method on a real model across seeds: the README's table, read from audit folders.

Run the audits (e.g. of Qwen2.5-Coder-0.5B-Instruct, `python bench/real_checkpoints.py
qwen-coder-0.5b` prints its folder), then

    python bench/method_table.py DIR_SEED0 DIR_SEED1 DIR_SEED2

prints, per audit: the baseline refusal share with its Wilson interval, l* with its bootstrap
stability and the runner-up layers (drop, KL, resample share, coherent min_k), min_k with its
KL and the judged shares at every judged k, the search that ran and the audit's time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from depthcard.report.removal import finding
from depthcard.schemas.report import AuditReport


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def rows(report: AuditReport) -> list[str]:
    h, sel, ab = report.headline, report.selected_layer, report.ablation
    seconds = sum(s.seconds for s in report.stages)
    out = [
        f"**seed {report.config.seed}** ({report.held_out.sets[0].eval} held-out harmful "
        f"prompts; {seconds / 60:.1f} min, dtype {report.config.dtype}): {finding(report)}",
        "",
        f"- baseline refusal {_pct(h.baseline_refusal_rate)} "
        f"[Wilson {_pct(h.baseline_refusal_low)}–{_pct(h.baseline_refusal_high)}]",
    ]
    stab = "—" if sel.stability is None else f"{100 * sel.stability:.0f} %"
    cands = "; ".join(
        f"{'**' if c.chosen else ''}{c.layer}{'**' if c.chosen else ''}: drop {c.drop:.2f}, "
        f"KL {c.kl:.3f}, {100 * c.resample_share:.0f} % of resamples, min k "
        f"{c.coherent_min_k if c.coherent_min_k is not None else f'> {c.searched_to}'}"
        for c in sel.candidates
    )
    out.append(f"- l* = {sel.layer} ({sel.rule}, stability {stab}); candidates: {cands}")
    if ab is not None:
        judged = [p for p in ab.curve if p.basis == "attack" and p.refusal_rate is not None]
        shares = ", ".join(
            f"k={p.k}: {_pct(p.refusal_rate)} / {_pct(p.compliance_share)} / "
            f"{_pct(p.broken_share)} (KL {p.kl:.3f})"
            for p in judged
        )
        out.append(
            f"- min k {ab.min_k if ab.min_k is not None else '—'} "
            f"({ab.min_k_reason or f'KL {ab.kl_at_min_k:.3f}'}; search {ab.min_k_search}); "
            f"refusal / compliance / broken: {shares}"
        )
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args(argv)
    for folder in args.folders:
        text = (folder / "report.json").read_text(encoding="utf-8")
        print("\n".join(rows(AuditReport.model_validate_json(text))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
