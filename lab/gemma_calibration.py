"""`depthcard calibrate --family gemma-270m`: the family on a real base, audited and attacked.

For each child (`lab.gemma_family`): materialise it, audit it as a pair against the templated
base (the ordinary audit, in-process), measure the ground truth (`lab.removal_ground_truth`)
on held-out prompts and its erosion (`lab.erosion_steps`); then test the predictions
(`lab.gemma_predictions`) and write `calibration.json` (`schemas.gemma_calibration`) and
`calibration.md`. Child folders are removed after use unless `keep_weights`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from depthcard.analysis import __version__
from depthcard.lab import gemma_family as fam
from depthcard.lab.calibration_predictions import HELD_AT
from depthcard.schemas.gemma_calibration import (
    GEMMA_CALIBRATION_SCHEMA_VERSION,
    GemmaCalibrationReport,
    GemmaChild,
    GemmaFamilySettings,
)
from depthcard.schemas.report import AuditConfig

log = logging.getLogger(__name__)

GT_SPLIT_SEED = 1  # the ground truth's fit/eval split, drawn apart from the audit's (seed 0)

# Measured on Gemma-3-270M (bench/gemma_family_timing.py) on this repository's 2-core AMD EPYC
# with 1 thread while another audit ran (load 4): a LoRA step (batch 8, 523 tokens) took
# 10.7–17.1 s, a first-token pass over 8 chat prompts 1.22 s (bf16: 0.71 s), 16 greedy tokens
# for 8 prompts 5.8 s. The audit's own time on this model was not measured: 25 minutes is
# `depthcard estimate`'s 1,632 decode steps at the measured decode cost, plus its forward work.
SECONDS_PER_TRAIN_STEP = 14.0
SECONDS_PER_FIRST_TOKEN_BATCH = 1.2  # 8 prompts
SECONDS_PER_DECODE_STEP = 0.36  # a batch of 8
SECONDS_PER_AUDIT = 1500.0
TYPICAL_STOP_K = 4  # the ordered sweep's typical stop per layer (the worst case is k_max)


@dataclass(frozen=True)
class GemmaPlan:
    """One run: the children, how they train, and the audit/ground-truth/erosion settings."""

    specs: tuple[fam.ChildSpec, ...] = field(default_factory=fam.full_plan)
    train: fam.TrainSettings = field(default_factory=fam.TrainSettings)
    max_prompts: int = 48
    max_new_tokens: int = 48
    k_max: int = 16
    erosion_steps: int = 60
    erosion_every: int = 10
    erosion_lr: float = 5e-4
    fit_seed: int = 0
    keep_weights: bool = False
    ignore_placebo: bool = False


def make_plan(children: int | None = None, max_prompts: int = 48, train_steps: int = 150,
              erosion_steps: int = 60, k_max: int = 16, max_new_tokens: int = 48,
              threads: int = 2, keep_weights: bool = False) -> GemmaPlan:  # fmt: skip
    """The full plan (16 children over seeds 0 and 1), or its first `children` taken
    alternately from the two seeds so a reduced run still has both."""
    specs = fam.full_plan()
    if children is not None:
        per_seed = [specs[: len(specs) // 2], specs[len(specs) // 2 :]]
        specs = tuple(s for pair in zip(*per_seed, strict=True) for s in pair)[:children]
    train = fam.TrainSettings(steps=train_steps, threads=threads)
    return GemmaPlan(specs, train, max_prompts, max_new_tokens, k_max, erosion_steps,
                     min(10, max(1, erosion_steps)), keep_weights=keep_weights)  # fmt: skip


def estimate_seconds(plan: GemmaPlan, stop_k: int | None = TYPICAL_STOP_K) -> float:
    """The run's time on Gemma-3-270M on this machine's cores, from the measured unit costs.

    `stop_k`: where the ordered sweep stops on a layer on average (None: worst case, every
    layer of the window judged at every k).
    """
    batches = -(-(plan.max_prompts // 2) // 8)  # eval half, in batches of 8
    gen = batches * plan.max_new_tokens * SECONDS_PER_DECODE_STEP
    per_point = gen + 3 * batches * SECONDS_PER_FIRST_TOKEN_BATCH  # + Ds, Dh, NLL passes
    window = 11  # Gemma-3-270M's 18 blocks: points 4..14
    k = plan.k_max if stop_k is None else min(stop_k, plan.k_max)
    ground_truth = window * (k + 1) * per_point
    measurements = plan.erosion_steps // plan.erosion_every + 1
    erosion = plan.erosion_steps * SECONDS_PER_TRAIN_STEP + measurements * gen
    train = plan.train.steps * SECONDS_PER_TRAIN_STEP
    return len(plan.specs) * (train + SECONDS_PER_AUDIT + ground_truth + erosion)


def audit_config(plan: GemmaPlan) -> AuditConfig:
    return AuditConfig(
        max_prompts=plan.max_prompts, max_new_tokens=plan.max_new_tokens, device="cpu", seed=0,
        dtype="float32",
    ).with_concrete_dtype(cuda_available=False)  # fmt: skip


def git_commit() -> str | None:
    """The commit of the code that runs (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, check=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def audit_child(plan: GemmaPlan, base: Path, folder: Path) -> dict:
    """The pair audit base → child; its report folder beside the child; the numbers."""
    from depthcard.analysis.audit import run_audit
    from depthcard.analysis.models import parse_model_spec
    from depthcard.analysis.prompt_inputs import load_prompt_inputs
    from depthcard.lab.calibration_suite import ablation_cost, depth_null
    from depthcard.report.report_folder import write_report_folder

    cfg = audit_config(plan)
    run = run_audit(
        base=parse_model_spec(str(base)), child=parse_model_spec(str(folder)),
        prompts=load_prompt_inputs(max_prompts=cfg.max_prompts, seed=cfg.seed), cfg=cfg,
    )  # fmt: skip
    write_report_folder(folder.parent / f"{folder.name}.audit", run.report, run.tensors, "",
                        overwrite=True, plots=False)  # fmt: skip
    r, frag = run.report, run.report.fragility
    cost = ablation_cost(r)
    null = depth_null(r)
    return {
        "refusal_rate": r.headline.baseline_refusal_rate,
        "depth_score": r.headline.alignment_depth_score,
        "depth_vs_null": null.get("depth_vs_null"),
        "depth_p_value": null.get("depth_p_value"),
        "min_k": cost["min_k"], "min_k_reason": cost.get("min_k_reason"),
        "attack_k": cost.get("attack_k"), "kl_at_min_k": cost["kl_at_min_k"],
        "sharpness": frag.sharpness if frag else None,
        "forecast_steps": frag.forecast_steps if frag else None,
        "fragility_rise": frag.delta_loss[-1] if frag and frag.delta_loss else None,
        "absent": [f"{a.section}: {a.reason}" for a in r.absent],
    }  # fmt: skip


def _evaluator(model, tok, plan: GemmaPlan):
    """(Evaluator on the ground truth's eval half, fit-half contrast bases per window layer)."""
    from depthcard.analysis.ablation import refusal_token_ids
    from depthcard.analysis.ablation_cost import AblationInputs, AblationSettings, Evaluator
    from depthcard.analysis.capture import tokenize_prompts
    from depthcard.analysis.directions import layer_window
    from depthcard.analysis.judges import get_judge
    from depthcard.analysis.models import decoder_layers
    from depthcard.analysis.prompt_inputs import load_prompt_inputs, split_indices
    from depthcard.lab.chat_tuning import rows_no_grad
    from depthcard.lab.removal_ground_truth import contrast_basis

    cfg = audit_config(plan)
    sets = load_prompt_inputs(max_prompts=plan.max_prompts, seed=cfg.seed)
    halves = {
        role: split_indices(s.categories, cfg.eval_fraction, GT_SPLIT_SEED, s.name)
        for role, s in (("harmful", sets.harmful), ("harmless", sets.harmless))
    }
    texts = {role: s.texts for role, s in (("harmful", sets.harmful), ("harmless", sets.harmless))}
    pick = lambda role, half: [texts[role][i] for i in halves[role][half]]  # noqa: E731
    ids = lambda t: tokenize_prompts(t, "chat", tok, tok)  # noqa: E731
    data = AblationInputs(
        harmful_ids=ids(pick("harmful", 1)), harmless_ids=ids(pick("harmless", 1)),
        capability_ids=[], harmful_texts=pick("harmful", 1), pad_id=tok.pad_token_id,
        refusal_ids=refusal_token_ids(tok), split="eval",
        harmless_texts=pick("harmless", 1),
    )  # fmt: skip
    settings = AblationSettings.from_config(cfg, get_judge(cfg.judge))
    ev = Evaluator(model, decoder_layers(model), tok, data, settings)
    lo, hi = layer_window(model.config.num_hidden_layers, cfg.layer_window)
    points = tuple(range(lo, min(hi, model.config.num_hidden_layers - 1) + 1))
    s = rows_no_grad(model, ids(pick("harmful", 0)), tok.pad_token_id, points)
    h = rows_no_grad(model, ids(pick("harmless", 0)), tok.pad_token_id, points)
    bases = {p: contrast_basis(s[:, j], h[:, j], plan.k_max) for j, p in enumerate(points)}
    return ev, bases


def ground_truth_and_erosion(plan: GemmaPlan, folder: Path, seed: int) -> dict:
    """The strong attack on held-out prompts, then the benign fine-tune's erosion curve."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from depthcard.analysis.generation import generate_responses
    from depthcard.analysis.judges import get_judge, refusal_rate
    from depthcard.lab.erosion_steps import erode, steps_to_half
    from depthcard.lab.removal_ground_truth import measure_ground_truth

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    clock = time.perf_counter()
    ev, bases = _evaluator(model, tok, plan)
    truth = measure_ground_truth(ev, bases, plan.k_max)
    seconds = {"ground_truth": round(time.perf_counter() - clock, 1)}
    texts, judge = ev.data.harmful_texts, get_judge("substring")

    def measure(m) -> float:
        answers = generate_responses(m, tok, texts, max_new_tokens=plan.max_new_tokens,
                                     batch_size=ev.s.batch_size)  # fmt: skip
        return refusal_rate(answers, judge)

    clock = time.perf_counter()
    curve = erode(model, tok, measure, steps=plan.erosion_steps, every=plan.erosion_every,
                  lr=plan.erosion_lr, seed=seed, settings=plan.train,
                  end_of_turn=fam.END_OF_TURN)  # fmt: skip
    seconds["erosion"] = round(time.perf_counter() - clock, 1)
    return {
        "ground_truth_refusal": truth.baseline_refusal, "removal": truth.points,
        "erosion": curve, "erosion_steps_to_half": steps_to_half(curve), "seconds": seconds,
    }  # fmt: skip


def run_child(plan: GemmaPlan, base: Path, child: fam.Child, out: Path) -> GemmaChild:
    """Materialise, audit, attack and erode one child."""
    clock = time.perf_counter()
    folder = fam.materialise_child(base, child, plan.train, out / child.name)
    seconds = {"materialise": round(time.perf_counter() - clock, 1)}
    clock = time.perf_counter()
    audit = audit_child(plan, base, folder)
    seconds["audit"] = round(time.perf_counter() - clock, 1)
    rest = ground_truth_and_erosion(plan, folder, child.spec.seed)
    seconds.update(rest.pop("seconds"))
    if not plan.keep_weights:
        shutil.rmtree(folder)
    spec, rec = child.spec, child.record
    return GemmaChild(
        name=child.name, recipe=spec.recipe, deep_share=spec.deep_share, tau=spec.tau,
        seed=spec.seed, depth_grade=spec.depth_grade, train_loss=rec.get("final_loss"),
        train_seconds=rec.get("train_seconds"), seconds=seconds, **audit, **rest,
    )  # fmt: skip


def settings(plan: GemmaPlan, base: Path, digest: str) -> GemmaFamilySettings:
    train = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan.train).items()}
    return GemmaFamilySettings(
        base=str(base), base_sha256=digest, children=[s.name for s in plan.specs], train=train,
        max_prompts=plan.max_prompts, max_new_tokens=plan.max_new_tokens, k_max=plan.k_max,
        erosion_steps=plan.erosion_steps, erosion_every=plan.erosion_every,
        erosion_lr=plan.erosion_lr, fit_seed=plan.fit_seed, threads=plan.train.threads,
    )  # fmt: skip


def base_placebo(base: Path, plan: GemmaPlan) -> list[float]:
    """The audit's KL placebo on the templated base: first-token KL of one random direction
    ablated at every residual point (`RANDOM_DRAWS` draws), on the ground truth's eval half of
    the harmless prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from depthcard.analysis.ablation import ablated, first_token_logprobs
    from depthcard.analysis.ablation_cost import placebo_kl
    from depthcard.analysis.capture import tokenize_prompts
    from depthcard.analysis.models import decoder_layers
    from depthcard.analysis.prompt_inputs import load_prompt_inputs, split_indices

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    cfg = audit_config(plan)
    s = load_prompt_inputs(max_prompts=plan.max_prompts, seed=cfg.seed).harmless
    half = split_indices(s.categories, cfg.eval_fraction, GT_SPLIT_SEED, s.name)[1]
    ids = tokenize_prompts([s.texts[i] for i in half], "chat", tok, tok)
    layers = decoder_layers(model)

    def logp(basis):
        with torch.no_grad(), ablated(layers, basis):
            return first_token_logprobs(model, ids, tok.pad_token_id, 16, False)

    return placebo_kl(logp, logp(None), model.config.hidden_size, 1)


def check_base(base: Path, plan: GemmaPlan) -> list[float]:
    """The base's KL placebo; stops the run where one random direction already disturbs the
    base (every child would read "removed only by breaking" whatever its training).

    Raises:
        UserError: the base fails, and `plan.ignore_placebo` is off.
    """
    from depthcard.analysis.ablation_cost import RANDOM_KL_DISRUPTIVE
    from depthcard.schemas.errors import UserError

    draws = base_placebo(base, plan)
    if min(draws) >= RANDOM_KL_DISRUPTIVE and not plan.ignore_placebo:
        raise UserError(
            f"{base}: ablating one random direction costs first-token KL "
            f"{min(draws):.3g}–{max(draws):.3g} nats on this base (from "
            f"{RANDOM_KL_DISRUPTIVE:g} directional ablation breaks a model whatever is removed), "
            "so the family could not calibrate removal cost; --ignore-placebo runs it anyway"
        )
    return draws


def run_gemma_suite(out: Path, plan: GemmaPlan, raw_base: Path, cache: Path):
    """Template the base, check its KL placebo, build (or reuse) the family, run every child;
    write the results."""
    from depthcard.lab.gemma_predictions import predictions
    from depthcard.lab.organisms import deterministic

    start = time.perf_counter()
    base = fam.template_base(raw_base, cache / "base-templated")
    with deterministic(0, plan.train.threads):
        placebo = check_base(base, plan)
    log.info("base placebo: one random direction costs KL %s", placebo)
    children = fam.build_family(base, plan.specs, plan.train, cache / "children")
    seconds = {"build": round(time.perf_counter() - start, 1)}
    with deterministic(0, plan.train.threads):
        results = [run_child(plan, base, c, out) for c in children]
    seconds["children"] = round(time.perf_counter() - start - seconds["build"], 1)
    seconds["total"] = round(time.perf_counter() - start, 1)
    report = GemmaCalibrationReport(
        schema_version=GEMMA_CALIBRATION_SCHEMA_VERSION, family="gemma-270m",
        created_at=datetime.now(UTC), tool_version=__version__, commit=git_commit(),
        settings=settings(plan, base, fam.weights_digest(base)), base_random_kl=placebo,
        children=results,
        predictions=predictions(results, plan.fit_seed, plan.erosion_steps, plan.erosion_every),
        estimate_seconds=round(estimate_seconds(plan), 1), seconds=seconds,
    )  # fmt: skip
    (out / "calibration.json").write_text(report.model_dump_json(indent=2) + "\n", "utf-8")
    (out / "calibration.md").write_text(markdown(report) + "\n", "utf-8")
    return report


def _cell(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def markdown(report: GemmaCalibrationReport) -> str:
    """The children's table, the prediction table (ρ, p, n) and the run's time and commit."""
    from depthcard.lab.gemma_predictions import COST_READINGS, DEFAULT_COST

    cost = COST_READINGS[DEFAULT_COST]
    lines = [
        "| child | recipe | deep share | τ | seed | refusal | depth vs null | min_k | KL@min_k "
        "| removal KL | sharpness | steps to half |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.children:
        removal = cost(c)
        cells = [c.name, c.recipe, c.deep_share, c.tau, c.seed, c.refusal_rate, c.depth_vs_null,
                 c.min_k, c.kl_at_min_k, "none coherent" if removal == 1e6 else removal,
                 c.sharpness, c.erosion_steps_to_half]  # fmt: skip
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    lines += ["", "| prediction | x → y | n | Spearman ρ | p (one-sided, exact) | verdict |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for p in report.predictions:
        cells = [p.name, f"{p.x} → {p.y}", p.n, p.spearman, p.p_value, p.verdict]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    kl = report.base_random_kl
    lines += ["", f"Base placebo: one random direction ablated costs first-token KL "
              f"{min(kl):.3g}–{max(kl):.3g} nats ({len(kl)} draws)."]  # fmt: skip
    total = report.seconds.get("total", 0.0)
    lines += ["", f"{len(report.children)} children, {total:.0f} s wall time "
              f"(estimated {report.estimate_seconds:.0f} s), commit {report.commit or 'unknown'}, "
              f"held at ρ ≥ {HELD_AT}."]  # fmt: skip
    return "\n".join(lines)


def run_cli(args) -> int:
    """`depthcard calibrate --family gemma-270m`: print the estimate, run, print the tables."""
    import torch

    from depthcard.analysis.gguf_import import default_cache
    from depthcard.schemas.errors import UserError

    out: Path = args.out
    raw = args.base or default_cache() / "gemma-3-270m-q4_k_m"
    if not (raw / "config.json").is_file():
        raise UserError(f"{raw}: no converted base; run python bench/real_checkpoints.py "
                        "gemma-3-270m (or pass --base)")  # fmt: skip
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise UserError(f"{out} is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(args.children, args.max_prompts, args.train_steps, args.erosion_steps,
                     args.k_max, args.max_new_tokens, args.threads, args.keep_weights)  # fmt: skip
    plan = replace(plan, ignore_placebo=args.ignore_placebo)
    print(f"gemma-270m family: {len(plan.specs)} children; estimated "
          f"{estimate_seconds(plan) / 3600:.1f} h for Gemma-3-270M on 2 CPU cores "
          f"({estimate_seconds(plan, None) / 3600:.1f} h if every window layer is judged at "
          "every k); per-unit costs measured with 1 thread under load", flush=True)  # fmt: skip
    threads = torch.get_num_threads()
    try:
        report = run_gemma_suite(out, plan, raw, args.cache or default_cache() / "gemma-family")
    finally:
        torch.set_num_threads(threads)
    print(markdown(report))
    print(f"\nwrote {out / 'calibration.json'}")
    return 0
