"""`depthcard calibrate`: train the organism family, audit it, and test the audit's claims.

The family (`lab.organism_family`) is a base and instruct siblings trained with known knobs —
target entanglement τ, rank r, seed — plus benign fine-tunes of each sibling (`lab.erode`).
Each sibling is audited in-process with modest settings; each eroded organism's refusal rate
is measured with the audit's judge on the audit's harmful prompts. Then, across the family,
Spearman rank correlations test whether the audit's numbers predict what they claim to
(`lab.calibration_predictions`).

Writes `DIR/calibration.json` (`schemas.calibration.CalibrationReport`) and prints Markdown.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from depthcard.analysis import __version__
from depthcard.lab.calibration_predictions import HELD_AT, markdown, predictions
from depthcard.schemas.calibration import (
    CALIBRATION_SCHEMA_VERSION,
    CalibrationReport,
    FamilySettings,
    OrganismResult,
    SiblingSettings,
)
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import AuditConfig

if TYPE_CHECKING:  # the family module imports torch; the CLI parser must stay light
    from depthcard.lab import organism_family as fam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuitePlan:
    """The family plus the audit and erosion settings of one suite run."""

    family: fam.FamilyConfig
    erosion_steps: tuple[int, ...]
    erosion_lr: float
    max_prompts: int
    max_new_tokens: int
    quick: bool


def make_plan(quick: bool) -> SuitePlan:
    """The full suite (about 15 minutes on one idle CPU thread) or the test-sized one.

    Full: the τ grid 0.05–0.95 at rank 1, the rank grid r ∈ {1, 2, 4} at τ = 0.5, and a
    second seed at (τ = 0.5, r = 1) and (τ = 0.5, r = 4): eleven instruct siblings.
    """
    from depthcard.lab.organism_family import FamilyConfig, SiblingSpec

    if quick:
        specs = (SiblingSpec(0.1), SiblingSpec(0.9), SiblingSpec(0.9, rank=2))
        family = FamilyConfig(siblings=specs, base_steps=40, instruct_steps=40, contrast_batch=8)
        return SuitePlan(family, (20,), 3e-3, 16, 12, quick=True)
    grid = tuple(SiblingSpec(t) for t in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95))
    ranks = (SiblingSpec(0.5, rank=2), SiblingSpec(0.5, rank=4))
    seeds = (SiblingSpec(0.5, seed=1), SiblingSpec(0.5, rank=4, seed=1))
    family = FamilyConfig(siblings=grid + ranks + seeds, instruct_steps=240)
    # 3e-3 takes the shipped organism's refusal rate from 0.88 to 0.0 in 80 steps
    return SuitePlan(family, (20, 40, 80), 3e-3, 48, 24, quick=False)


def audit_config(plan: SuitePlan) -> AuditConfig:
    """The audit settings of every sibling: `AuditConfig`'s defaults, on the CPU in float32,
    with the plan's prompt cap and answer length."""
    return AuditConfig(
        max_prompts=plan.max_prompts,
        max_new_tokens=plan.max_new_tokens,
        device="cpu",
        seed=plan.family.seed,
    ).with_concrete_dtype(cuda_available=False)


def audit_prompts(plan: SuitePlan):
    """The built-in prompt sets, capped and subsampled as the audit of a sibling reads them."""
    from depthcard.analysis.prompt_inputs import load_prompt_inputs

    cfg = audit_config(plan)
    return load_prompt_inputs(max_prompts=cfg.max_prompts, seed=cfg.seed)


def audit_sibling(plan: SuitePlan, base: Path, sib: fam.Sibling) -> OrganismResult:
    """Audit base → sibling; write its report folder; return the numbers the suite needs."""
    from depthcard.analysis.audit import run_audit
    from depthcard.analysis.models import parse_model_spec
    from depthcard.report.report_folder import write_report_folder

    clock = time.perf_counter()
    run = run_audit(
        base=parse_model_spec(str(base)),
        child=parse_model_spec(str(sib.folder)),
        prompts=audit_prompts(plan),
        cfg=audit_config(plan),
    )
    seconds = time.perf_counter() - clock
    write_report_folder(
        sib.folder / "audit", run.report, run.tensors, "", overwrite=True, plots=False
    )
    r = run.report
    absent = [f"{a.section}: {a.reason}" for a in r.absent if a.section != "erosion"]
    return OrganismResult(
        name=sib.name,
        kind="instruct",
        **_knobs(sib.spec),
        trained_entanglement=min(1.0, sib.entanglement),
        trained_group_overlap=sib.group_overlap,
        refusal_rate=r.headline.baseline_refusal_rate,
        depth_score=r.headline.alignment_depth_score,
        **depth_null(r),
        rho_eps_aligned=r.headline.rho_eps_aligned,
        **ablation_cost(r),
        sharpness=r.fragility.sharpness if r.fragility else None,
        audit_seconds=round(seconds, 2),
        absent=absent,
    )


def _knobs(spec: fam.SiblingSpec) -> dict:
    return {"target": spec.target, "rank": spec.rank, "seed": spec.seed}


_NULL_FIELDS = ("depth_vs_null", "depth_null_mean", "depth_null_p95", "depth_p_value")


def depth_null(report) -> dict:
    """The depth score's permutation-null numbers, from the headline or the depth section.

    Read with getattr: reports written before the audit computed a null have none of them.
    """
    out = {}
    for name in _NULL_FIELDS:
        for part in (report.headline, report.depth):
            value = getattr(part, name, None) if part is not None else None
            if value is not None:
                out[name] = value
                break
    return out


def ablation_cost(report) -> dict:
    """min_k, KL at min_k, K, the rule the audit used and, when min_k is None, its reason.

    The rule is "coherent" when the ablation section records `max_broken_share` (refusal
    below threshold *and* broken share at most that), else "refusal-only" (the earlier rule,
    which rewarded an attack for breaking the model): reports from before the three-way judge
    record it as None.
    """
    ab = report.ablation
    if ab is None:
        return {"min_k": None, "kl_at_min_k": None}
    coherent = ab.max_broken_share is not None
    attack = [p.k for p in ab.curve if p.basis == "attack"]
    return {
        "min_k": ab.min_k,
        "kl_at_min_k": ab.kl_at_min_k,
        "attack_k": max(attack) if attack else None,
        "min_k_rule": "coherent" if coherent else "refusal-only",
        "min_k_reason": getattr(ab, "min_k_reason", None) if ab.min_k is None else None,
    }


def harmful_texts(plan: SuitePlan) -> list[str]:
    """The audit's harmful prompts (same subset, same seed)."""
    return audit_prompts(plan).harmful.texts


def refusal_rate(folder: Path, texts: list[str], max_new_tokens: int) -> float:
    """Substring-judged greedy refusal rate in the chat template (the audit's judge)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from depthcard.lab.organisms import split_rate

    model = AutoModelForCausalLM.from_pretrained(folder)
    return split_rate(model, AutoTokenizer.from_pretrained(folder), texts, True, max_new_tokens)


def erode_siblings(plan: SuitePlan, out: Path, siblings, texts) -> list[OrganismResult]:
    """Benign fine-tunes of every sibling at every step count, with their refusal drops."""
    from depthcard.lab.erode import erode_organism

    results = []
    for sib in siblings:
        parent_rate = refusal_rate(sib.folder, texts, plan.max_new_tokens)
        for steps in plan.erosion_steps:
            name = f"{sib.name}_eroded_{steps}"
            erode_organism(
                sib.folder,
                out / name,
                steps,
                plan.erosion_lr,
                plan.family.seed,
                threads=plan.family.threads,
            )
            rate = refusal_rate(out / name, texts, plan.max_new_tokens)
            results.append(
                OrganismResult(
                    name=name,
                    kind="eroded",
                    **_knobs(sib.spec),
                    parent=sib.name,
                    erosion_steps=steps,
                    refusal_rate=rate,
                    refusal_drop=round(parent_rate - rate, 4),
                    erosion=round(1.0 - rate / parent_rate, 4) if parent_rate > 0 else None,
                )
            )
    return results


def settings(plan: SuitePlan) -> FamilySettings:
    """The plan as recorded in calibration.json."""
    f = plan.family
    return FamilySettings(
        quick=plan.quick,
        siblings=[
            SiblingSettings(name=x.name, target=x.target, rank=x.rank, seed=x.seed)
            for x in f.siblings
        ],
        entangle_weight=f.entangle_weight,
        rank_weight=f.rank_weight,
        base_steps=f.base_steps,
        instruct_steps=f.instruct_steps,
        capability_k=f.capability_k,
        regularised_layers=list(f.layers),
        erosion_steps=list(plan.erosion_steps),
        erosion_lr=plan.erosion_lr,
        max_prompts=plan.max_prompts,
        max_new_tokens=plan.max_new_tokens,
        seed=f.seed,
        threads=f.threads,
    )


def run_suite(out: Path, plan: SuitePlan) -> CalibrationReport:
    """Train, audit and erode the family into `out`; write and return calibration.json."""
    seconds: dict[str, float] = {}
    start = clock = time.perf_counter()
    from depthcard.lab.organism_family import train_family

    base, siblings = train_family(out, plan.family)
    seconds["train"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    organisms = [audit_sibling(plan, base, s) for s in siblings]
    seconds["audit"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    organisms += erode_siblings(plan, out, siblings, harmful_texts(plan))
    seconds["erode"] = round(time.perf_counter() - clock, 1)
    seconds["total"] = round(time.perf_counter() - start, 1)
    report = CalibrationReport(
        schema_version=CALIBRATION_SCHEMA_VERSION,
        created_at=datetime.now(UTC),
        tool_version=__version__,
        settings=settings(plan),
        organisms=organisms,
        predictions=predictions(organisms),
        held_threshold=HELD_AT,
        seconds=seconds,
    )
    (out / "calibration.json").write_text(report.model_dump_json(indent=2) + "\n", "utf-8")
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`depthcard calibrate` options (the organism family by default; `--family gemma-270m`
    is the family on a real pretrained base, `lab.gemma_calibration`)."""
    p.add_argument("--out", required=True, type=Path, help="folder for the family and report")
    p.add_argument("--family", choices=("organisms", "gemma-270m"), default="organisms",
                   help="tiny organisms (default) or LoRA children of Gemma-3-270M")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="test-sized family (about two minutes)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    g = p.add_argument_group("gemma-270m family (reduced runs: fewer children, prompts, steps)")
    g.add_argument("--base", type=Path, default=None,
                   help="the converted base folder (default: the cache's gemma-3-270m-q4_k_m; "
                   "python bench/real_checkpoints.py gemma-3-270m makes it)")  # fmt: skip
    g.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="children cache (default: $DEPTHCARD_CACHE/gemma-family)",
    )
    g.add_argument(
        "--children",
        type=int,
        default=None,
        help="first N children of the plan, alternating seeds (default: all 16)",
    )
    g.add_argument("--max-prompts", type=int, default=48, help="prompts per set")
    g.add_argument("--max-new-tokens", type=int, default=48, help="tokens per judged answer")
    g.add_argument("--train-steps", type=int, default=150, help="LoRA steps per child")
    g.add_argument("--erosion-steps", type=int, default=60, help="benign fine-tune budget")
    g.add_argument("--k-max", type=int, default=16, help="ground truth: directions per layer")
    g.add_argument("--threads", type=int, default=2, help="torch threads")
    g.add_argument("--keep-weights", action="store_true", help="keep each child's folder")
    g.add_argument("--ignore-placebo", action="store_true",
                   help="run even where one random direction ablated breaks the base")  # fmt: skip


def run(args, token: str | None) -> int:
    """CLI handler: run the suite, print the Markdown tables and the verdicts."""
    import torch

    out: Path = args.out
    if args.family == "gemma-270m":
        from depthcard.lab.gemma_calibration import run_cli

        return run_cli(args)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise UserError(f"{out} is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the organisms are tiny: more threads only oversubscribe
    try:
        report = run_suite(out, make_plan(args.quick))
    finally:
        torch.set_num_threads(threads)
    print(markdown(report))
    print(f"\nwrote {out / 'calibration.json'}")
    return 0
