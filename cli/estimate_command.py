"""`depthcard estimate`: an audit's work and predicted time, without a forward pass.

It takes the models and the audit's own options (built from `AuditConfig` through
`report.reproduce.AUDIT_FLAGS`, as `depthcard audit` builds them), so the plan is for
exactly the audit those flags would run. `--flavour` names the hardware; by default the
bot's default flavours are compared and the bot's choice among them is shown. `--json`
prints the `schemas.estimate.AuditEstimate`.
"""

from __future__ import annotations

import argparse

from depthcard.cli import audit_command
from depthcard.schemas.bot_config import JobsConfig
from depthcard.schemas.estimate import AuditEstimate

STAGES = ("capture-base", "capture-child", "ablation", "fragility")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Models and prompt files as `depthcard audit` takes them, its config options, and
    --flavour / --json."""
    p.add_argument("base", nargs="?", help="base model: local folder or org/name[@revision]")
    p.add_argument("child", nargs="?", help="instruct (child) model: folder or org/name[@rev]")
    p.add_argument("--demo", action="store_true", help="estimate the bundled calibration pair")
    p.add_argument("--child-only", metavar="CHILD", help="estimate a child-only audit of CHILD")
    audit_command.add_prompt_arguments(p)
    p.add_argument(
        "--flavour",
        action="append",
        metavar="NAME",
        help="Hub Jobs flavour to predict for (repeat; 'all' for every known one); default: "
        "the bot's default flavours, with its choice among them",
    )
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    audit_command.add_config_arguments(p)


def flavour_names(asked: list[str] | None) -> list[str]:
    """The flavours to predict for: those asked ('all': the whole table), else the bot's
    default flavours that the table knows."""
    from depthcard.analysis.job_time import FLAVOURS

    if asked:
        return list(FLAVOURS) if "all" in asked else list(dict.fromkeys(asked))
    rules = JobsConfig.model_fields["flavours"].default_factory()
    return [r.flavor for r in rules if r.flavor in FLAVOURS]


def run(args, token: str | None) -> int:
    """Estimate and print; a UserError (bad flag, missing config.json) reaches the CLI."""
    from depthcard.analysis.estimate import estimate_audit
    from depthcard.analysis.job_time import hub_minutes

    cfg = audit_command.config_from_args(args)
    base, child = audit_command._specs(args)
    prompts = audit_command.load_prompts(args, cfg)
    audit_command._check_before_loading(cfg, prompts)
    estimate = estimate_audit(
        base=base,
        child=child,
        prompts=prompts,
        cfg=cfg,
        flavours=flavour_names(args.flavour),
        cap_minutes=hub_minutes(JobsConfig.model_fields["timeout"].default),
        token=token,
    )
    print(estimate.model_dump_json(indent=2) if args.json else render(estimate))
    return 0


def _n(value: float) -> str:
    return f"{value:,.0f}"


def render(e: AuditEstimate) -> str:
    """The estimate as a few small tables for a terminal."""
    m = e.child
    exact = "" if m.exact else " (approximate: Llama formula)"
    counted = "the child's tokenizer" if e.token_source == "tokenizer" else "estimated from words"
    lines = [
        f"depthcard estimate — {e.kind} audit of {m.source}",
        f"model: {m.architecture}, {_n(m.parameters)} parameters{exact}, {m.num_layers} blocks, "
        f"d = {m.hidden_size}, vocab {_n(m.vocab_size)}",
        "",
        f"{'prompt set':<16} {'prompts':>7} {'fit':>5} {'eval':>5} {'tokens':>9}  ({counted})",
    ]
    for s in e.sets:
        fit, held = ("" if v is None else str(v) for v in (s.fit, s.eval))
        lines.append(f"{s.key:<16} {s.prompts:>7} {fit:>5} {held:>5} {_n(s.tokens):>9}")
    lines += ["", f"{'stage':<14} {'work':<42} {'×':>3} {'passes':>7} {'tokens':>10} {'TFLOP':>8}"]
    for i in e.plan:
        lines.append(
            f"{i.stage:<14} {i.purpose:<42} {i.settings:>3} {_n(i.passes):>7} "
            f"{_n(i.tokens):>10} {i.flops / 1e12:>8.2f}"
        )
    t = e.totals
    lines += [
        f"{'total':<61} {_n(t.passes):>7} {_n(t.tokens):>10} {t.flops / 1e12:>8.2f}",
        f"generated tokens ≤ {_n(t.generated_tokens)} in ≤ {_n(t.decode_steps)} decode steps; "
        f"min_k search: {e.min_k_search}",
        "",
        *_flavour_table(e),
        "",
    ]
    if e.chosen is not None:
        lines.append(
            f"bot's choice: {e.chosen}, job timeout {e.timeout_minutes:.0f} min (predicted job "
            f"minutes × 3, at least 20, at most {e.timeout_cap_minutes:.0f})"
        )
    else:
        lines.append("bot's choice: none of these flavours has the memory for the model")
    lines += ["", "not counted, or counted as an upper bound:", *[f"- {n}" for n in e.notes]]
    return "\n".join(lines)


def _flavour_table(e: AuditEstimate) -> list[str]:
    """Minutes per stage, compute, job (with set-up), cost and memory fit per flavour."""
    stages = [s for s in STAGES if any(s in f.stage_minutes for f in e.flavours)]
    short = {"capture-base": "cap-base", "capture-child": "cap-child"}
    head = "".join(f" {short.get(s, s):>9}" for s in stages)
    rows = [
        "predicted minutes (GPU rows: predictions from datasheets, not measurements)",
        f"{'flavour':<13}{head} {'compute':>8} {'job':>6} {'USD':>6}  memory GB (need/has)",
    ]
    for f in e.flavours:
        cells = "".join(f" {f.stage_minutes.get(s, 0.0):>9.1f}" for s in stages)
        fits = "fits" if f.fits else "does not fit"
        rows.append(
            f"{f.flavour:<13}{cells} {f.compute_minutes:>8.1f} {f.job_minutes:>6.1f} "
            f"{f.usd:>6.2f}  {f.memory_needed_gb:.1f}/{f.memory_gb:.0f} {fits}"
        )
    return rows
