"""`depthcard audit`: arguments → prompt sets and config → audit → report folder → summary."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_SETS = {
    "harmful": "harmful-core",
    "harmless": "harmless-core",
    "capability": "capability-core",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", nargs="?", help="base model: local folder or org/name[@revision]")
    p.add_argument("child", nargs="?", help="instruct (child) model: folder or org/name[@rev]")
    p.add_argument("--out", required=True, type=Path, help="report folder to write")
    p.add_argument("--demo", action="store_true", help="audit the bundled calibration pair")
    p.add_argument("--child-only", metavar="CHILD", help="audit CHILD without a base model")
    p.add_argument(
        "--third",
        metavar="FINETUNE",
        help="a fine-tune of CHILD: three-model audit with erosion curves (needs BASE)",
    )
    p.add_argument("--harmful", type=Path, help="harmful prompt set (YAML); default harmful-core")
    p.add_argument("--harmless", type=Path, help="harmless prompt set; default harmless-core")
    p.add_argument("--capability", type=Path, help="capability text set; default capability-core")
    p.add_argument("--domain", type=Path, action="append", default=[], help="domain set (repeat)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default: bfloat16 on GPU, float32 on CPU",
    )
    p.add_argument("--batch-size", type=int, default=16, help="initial capture batch size")
    p.add_argument("--max-prompts", type=int, default=None, help="cap on prompts per set")
    p.add_argument("--seed", type=int, default=0, help="seed for --max-prompts subsampling")
    p.add_argument(
        "--position",
        choices=["last", "suffix"],
        default="last",
        help="read the last prompt token, or the mean over the template suffix",
    )
    p.add_argument("--num-directions", type=int, default=8, help="K, singular directions kept")
    p.add_argument(
        "--layers-path",
        default=None,
        help="dotted path of the decoder block list, if not discovered",
    )
    p.add_argument("--no-ablation", action="store_true", help="skip the abliteration-cost stage")
    p.add_argument("--judge", default="substring", help="refusal judge (default: substring)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per answer")
    p.add_argument("--capability-k", type=int, default=16, help="K_c, capability subspace size")
    p.add_argument("--no-fragility", action="store_true", help="skip the fragility forecast")
    p.add_argument(
        "--fragility-steps", type=int, default=10, help="benign SGD steps of the fragility law"
    )
    p.add_argument(
        "--power-iterations", type=int, default=20, help="power-iteration cap for sharpness"
    )
    p.add_argument(
        "--fragility-lr", type=float, default=None, help="SGD learning rate of the fragility law"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-plots", action="store_true", help="skip plots/*.png")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"--{name} must be at least 1, got {value}")


def _load_sets(args):
    from depthcard import prompts as prompt_sets
    from depthcard.analysis.audit import PromptInputs

    def load(path: Path | None, kind: str, default: str | None):
        if path is None:
            return prompt_sets.load_builtin(default) if default else None
        return prompt_sets.load_prompt_set(path, expect_kind=kind)

    def cap(s):
        if s is None or args.max_prompts is None or s.count <= args.max_prompts:
            return s
        return s.subset(args.max_prompts, args.seed)

    full = {
        "harmful": load(args.harmful, "harmful", DEFAULT_SETS["harmful"]),
        "harmless": load(args.harmless, "harmless", DEFAULT_SETS["harmless"]),
        "capability": load(args.capability, "capability", DEFAULT_SETS["capability"]),
    }
    domains = [load(p, "domain", None) for p in args.domain]
    counts = {s.name: s.count for s in [*full.values(), *domains] if s is not None}
    return PromptInputs(
        harmful=cap(full["harmful"]),
        harmless=cap(full["harmless"]),
        capability=cap(full["capability"]),
        domains=tuple(cap(d) for d in domains),
        source_counts=counts,
    )


def _config(args):
    import torch

    from depthcard.analysis.spectrum import DEFAULT_EPS
    from depthcard.schemas.report import AuditConfig
    from depthcard.schemas.sections import FragilitySettings

    dtype = args.dtype or (
        "bfloat16" if torch.cuda.is_available() and args.device != "cpu" else "float32"
    )
    return AuditConfig(
        eps=list(DEFAULT_EPS),
        headline_eps=0.05,
        num_directions=args.num_directions,
        position=args.position,
        batch_size=args.batch_size,
        max_prompts=args.max_prompts,
        seed=args.seed,
        device=args.device,
        dtype=dtype,
        layer_window=(0.2, 0.8),
        cross_domain_k=3,
        zero_tolerance=1e-6,
        ablation=not args.no_ablation,
        judge=args.judge,
        max_new_tokens=args.max_new_tokens,
        capability_k=args.capability_k,
        fragility=None
        if args.no_fragility
        else FragilitySettings(
            steps=args.fragility_steps,
            power_iterations=args.power_iterations,
            **({} if args.fragility_lr is None else {"learning_rate": args.fragility_lr}),
        ),
    )


def _specs(args):
    from depthcard.analysis.audit import DEMO_DIR
    from depthcard.analysis.models import parse_model_spec

    if args.demo:
        if args.base or args.child or args.child_only:
            raise ValueError("--demo takes no models")
        return parse_model_spec(str(DEMO_DIR / "base")), parse_model_spec(
            str(DEMO_DIR / "instruct")
        )
    if args.child_only:
        if args.base or args.child:
            raise ValueError("--child-only CHILD takes no positional models")
        return None, parse_model_spec(args.child_only)
    if not (args.base and args.child):
        raise ValueError("give BASE and CHILD, or --child-only CHILD, or --demo")
    return parse_model_spec(args.base), parse_model_spec(args.child)


def _third_spec(args, base):
    from depthcard.analysis.models import parse_model_spec

    if not args.third:
        return None
    if base is None:
        raise ValueError("--third needs a base model: give BASE CHILD --third FINETUNE")
    return parse_model_spec(args.third)


def reproduce_command(report) -> str:
    """The command that re-runs this audit at the same revisions and settings."""

    def name(ref) -> str:
        if ref is None:
            return ""
        return f"{ref.repo_id}@{ref.revision}" if ref.source == "hub" else ref.path

    cfg = report.config
    models = (
        ["--child-only", name(report.models.child)]
        if report.models.base is None
        else [name(report.models.base), name(report.models.child)]
    )
    if report.models.third is not None:
        models += ["--third", name(report.models.third)]
    parts = ["depthcard", "audit", *models, "--out", "audit"]
    if cfg.max_prompts:
        parts += ["--max-prompts", str(cfg.max_prompts), "--seed", str(cfg.seed)]
    if cfg.position != "last":
        parts += ["--position", cfg.position]
    parts += _non_default_flags(report)
    parts += ["--dtype", cfg.dtype]
    return shlex.join(parts)


def _non_default_flags(report) -> list[str]:
    """Every setting that differs from `depthcard audit`'s defaults, as flags."""
    cfg, out = report.config, []
    plain = {
        "num_directions": 8,
        "judge": "substring",
        "max_new_tokens": 64,
        "capability_k": 16,
    }
    for field, default in plain.items():
        if getattr(cfg, field) != default:
            out += [f"--{field.replace('_', '-')}", str(getattr(cfg, field))]
    if not cfg.ablation:
        out.append("--no-ablation")
    frag = cfg.fragility
    if frag is None:
        out.append("--no-fragility")
    else:
        from depthcard.schemas.sections import FragilitySettings

        default = FragilitySettings()
        for field, flag in (
            ("steps", "--fragility-steps"),
            ("power_iterations", "--power-iterations"),
            ("learning_rate", "--fragility-lr"),
        ):
            if getattr(frag, field) != getattr(default, field):
                out += [flag, str(getattr(frag, field))]
    for ref in report.prompt_sets:  # a set that is not the built-in default: name its file
        if ref.role == "domain" or DEFAULT_SETS.get(ref.role) != ref.name:
            out += [f"--{ref.role}", f"{ref.name}.yaml"]
    return out


def run(args, token: str | None) -> int:
    """Run the audit command; errors propagate to the CLI, which prints one line."""
    from depthcard.report.card import render_card_section
    from depthcard.report.report_folder import preflight, write_report_folder
    from depthcard.report.summary import summary_table

    positive = ("batch_size", "max_prompts", "num_directions", "max_new_tokens", "capability_k")
    for name in (*positive, "fragility_steps", "power_iterations"):
        _positive(name.replace("_", "-"), getattr(args, name))
    base, child = _specs(args)
    third = _third_spec(args, base)
    preflight(args.out, args.overwrite)
    prompts = _load_sets(args)
    cfg = _config(args)
    from depthcard.analysis.audit import run_audit

    result = run_audit(
        base=base,
        child=child,
        prompts=prompts,
        cfg=cfg,
        layers_path=args.layers_path,
        token=token,
        third=third,
    )
    report = result.report
    card = render_card_section(report, report_url=None, reproduce_command=reproduce_command(report))
    write_report_folder(
        args.out, report, result.tensors, card, overwrite=args.overwrite, plots=not args.no_plots
    )
    print(summary_table(report, args.out))
    return 0
