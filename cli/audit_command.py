"""`depthcard audit`: arguments → prompt sets and config → audit → report folder → summary.

The options that set the audit's numbers are built from `AuditConfig` (its defaults,
types, choices and descriptions) through `report.reproduce.AUDIT_FLAGS`, the same table the
card's reproduce command is written from. Only the choice of models, prompt files and
output are options of the command alone.
"""

from __future__ import annotations

import argparse
import logging
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from depthcard.report.reproduce import AUDIT_FLAGS, ConfigFlag, FlagGroup, flag_value
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import AuditConfig

log = logging.getLogger(__name__)


# The help sections, in order; each `AUDIT_FLAGS` entry names its own (`ConfigFlag.group`).
GROUPS: dict[FlagGroup, str] = {
    "input": "which models and prompt sets are audited",
    "measurement": "settings that change the numbers (recorded in the report)",
    "cost controls": "what runs, and how fast and in how much memory",
    "output": "what is written, and what is shown while it runs",
}


def add_groups(p: argparse.ArgumentParser) -> dict[FlagGroup, argparse._ArgumentGroup]:
    """The argument groups of `GROUPS` on `p`, as `hf` and `git` group their options."""
    return {name: p.add_argument_group(name, text) for name, text in GROUPS.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `depthcard audit`: models and files, then one per `AUDIT_FLAGS` entry."""
    groups = add_groups(p)
    inputs, output = groups["input"], groups["output"]
    inputs.add_argument("base", nargs="?", help="base model: local folder or org/name[@revision]")
    inputs.add_argument("child", nargs="?", help="instruct (child) model: folder or org/name[@rev]")
    inputs.add_argument("--demo", action="store_true", help="audit the bundled calibration pair")
    inputs.add_argument("--child-only", metavar="CHILD", help="audit CHILD without a base model")
    inputs.add_argument(
        "--third",
        metavar="FINETUNE",
        help="a fine-tune of CHILD: three-model audit with erosion curves (needs BASE)",
    )
    add_prompt_arguments(inputs)
    inputs.add_argument(
        "--layers-path",
        metavar="PATH",
        default=None,
        help="dotted path of the decoder block list, if not discovered",
    )
    output.add_argument("--out", required=True, type=Path, help="report folder to write")
    output.add_argument("--overwrite", action="store_true", help="replace a previous report folder")
    output.add_argument("--no-plots", action="store_true", help="skip plots/*.png")
    output.add_argument(
        "--progress",
        choices=("auto", "bar", "json", "off"),
        default="auto",
        help="progress on stderr: bars in a terminal, one JSON line per event elsewhere "
        "(auto), or none",
    )
    add_config_arguments(p, groups)


def add_prompt_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The prompt-set files an audit reads (shared with `depthcard estimate`)."""
    p.add_argument(
        "--harmful", metavar="FILE", type=Path, help="harmful prompt set (YAML); default "
        "harmful-core"
    )  # fmt: skip
    p.add_argument("--harmless", metavar="FILE", type=Path,
                   help="harmless prompt set; default harmless-core")  # fmt: skip
    p.add_argument("--capability", metavar="FILE", type=Path,
                   help="capability text set; default capability-core")  # fmt: skip
    p.add_argument("--domain", metavar="FILE", type=Path, action="append", default=[],
                   help="domain set (repeat for several)")  # fmt: skip


def _field(path: tuple[str, ...]) -> FieldInfo:
    """The pydantic field at `path` in AuditConfig (through an optional settings section)."""
    model: type[BaseModel] = AuditConfig
    info = model.model_fields[path[0]]
    for name in path[1:]:
        model = next(a for a in typing.get_args(info.annotation) if isinstance(a, type))
        info = model.model_fields[name]
    return info


def int_or_auto(text: str) -> int | str:
    """An argparse type for `int | Literal["auto"]` fields (e.g. `--batch-size auto`)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def _value_type(info: FieldInfo, flag: ConfigFlag) -> tuple[object, tuple | None, str | None]:
    """(argparse type, choices, metavar) of a field; `X | None` is read as X (its None as
    `flag.none_word` where it has one), `int | "auto"` as `int_or_auto`."""
    annotation = info.annotation
    args = typing.get_args(annotation)
    if any(
        typing.get_origin(a) is typing.Literal and typing.get_args(a) == ("auto",) for a in args
    ):
        return int_or_auto, None, "{N,auto}"
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        if flag.none_word is not None:
            choices = (flag.none_word, *choices)
        return type(choices[0]), choices, None
    return annotation, None, None


def add_config_arguments(
    p: argparse.ArgumentParser,
    groups: dict[FlagGroup, argparse._ArgumentGroup] | None = None,
) -> None:
    """One option per `AUDIT_FLAGS` entry, in its group; default, type, choices and help from
    the field (`groups` from `add_groups`, made on `p` when not given)."""
    groups = groups or add_groups(p)
    defaults = AuditConfig()
    for flag in AUDIT_FLAGS:
        info, where = _field(flag.path), groups[flag.group]
        if flag.switch_off:
            where.add_argument(flag.flag, dest=flag.dest, action="store_true", help=flag.help)
            continue
        kind, choices, metavar = _value_type(info, flag)
        default = flag_value(defaults, flag)
        if default is None and flag.none_word is not None:
            default = flag.none_word
        text = flag.help or (info.description or "").rstrip(".")
        shown = "" if default is None else " (default: %(default)s)"
        where.add_argument(flag.flag, dest=flag.dest, type=kind, choices=choices,
                           metavar=metavar, default=default, help=f"{text}{shown}")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> AuditConfig:
    """The AuditConfig the parsed options describe (dtype None on auto, fixed by the audit).

    Raises:
        UserError: a value the config refuses (e.g. --batch-size 0), naming the flag.
    """
    top: dict = {}
    for flag in AUDIT_FLAGS:
        value = getattr(args, flag.dest)
        if flag.switch_off:
            if value:
                top[flag.path[0]] = None if flag.path[0] == "fragility" else False
            continue
        if flag.none_word is not None and value == flag.none_word:
            value = None
        if len(flag.path) == 1:
            top[flag.path[0]] = value
        elif top.get(flag.path[0], {}) is not None:
            top.setdefault(flag.path[0], {})[flag.path[1]] = value
    try:
        return AuditConfig(**top)
    except ValidationError as exc:
        first = exc.errors()[0]
        where, problem = _flag_at(tuple(first["loc"])), first["msg"].lower()
        raise UserError(f"{where}: {problem}, got {first.get('input')!r}") from None


def _flag_at(loc: tuple) -> str:
    """The flag that sets the field at a pydantic error location."""
    matches = [f for f in AUDIT_FLAGS if f.path == loc[: len(f.path)]]
    if not matches:
        return ".".join(str(part) for part in loc)
    return max(matches, key=lambda f: len(f.path)).flag  # --fragility-steps, not --no-fragility


def load_prompts(args: argparse.Namespace, cfg: AuditConfig):
    """The prompt sets the options name (built-in defaults for the rest), capped per cfg."""
    from depthcard.analysis.prompt_inputs import load_prompt_inputs

    return load_prompt_inputs(
        args.harmful,
        args.harmless,
        args.capability,
        args.domain,
        max_prompts=cfg.max_prompts,
        seed=cfg.seed,
    )


def _specs(args):
    from depthcard.analysis.audit import DEMO_DIR
    from depthcard.analysis.models import parse_model_spec

    if args.demo:
        if args.base or args.child or args.child_only:
            raise UserError("--demo takes no models")
        return parse_model_spec(str(DEMO_DIR / "base")), parse_model_spec(
            str(DEMO_DIR / "instruct")
        )
    if args.child_only:
        if args.base or args.child:
            raise UserError("--child-only CHILD takes no positional models")
        return None, parse_model_spec(args.child_only)
    if not (args.base and args.child):
        raise UserError("give BASE and CHILD, or --child-only CHILD, or --demo")
    return parse_model_spec(args.base), parse_model_spec(args.child)


def _third_spec(args, base):
    from depthcard.analysis.models import parse_model_spec

    if not args.third:
        return None
    if base is None:
        raise UserError("--third needs a base model: give BASE CHILD --third FINETUNE")
    return parse_model_spec(args.third)


def _check_before_loading(cfg: AuditConfig, prompts) -> None:
    """Refuse settings that cannot work, before any model is loaded."""
    from depthcard.analysis.judges import JUDGES

    if cfg.judge not in JUDGES:
        available = ", ".join(sorted(JUDGES))
        raise UserError(f"unknown judge {cfg.judge!r}; available: {available}")
    n = len(prompts.harmful.texts)
    if cfg.num_directions > n:  # the d_model bound is checked once the model is loaded
        raise UserError(
            f"--num-directions {cfg.num_directions} exceeds the largest possible rank of M_DiD "
            f"(at most the {n} harmful prompts)"
        )


def run(args, token: str | None) -> int:
    """Run the audit command; a UserError reaches the CLI, which prints one line."""

    from depthcard.analysis.audit import run_audit
    from depthcard.analysis.progress import Progress, reporting
    from depthcard.report.card import render_card_section
    from depthcard.report.report_folder import preflight, write_report_folder
    from depthcard.report.reproduce import reproduce_command
    from depthcard.report.summary import summary_table

    cfg = config_from_args(args)
    base, child = _specs(args)
    third = _third_spec(args, base)
    preflight(args.out, args.overwrite)
    prompts = load_prompts(args, cfg)
    _check_before_loading(cfg, prompts)
    with reporting(Progress(args.progress)):
        result = run_audit(
            base=base,
            child=child,
            prompts=prompts,
            cfg=cfg,  # run_audit fixes dtype (measured on a CPU) and batch size
            layers_path=args.layers_path,
            token=token,
            third=third,
        )
    report = result.report
    card = render_card_section(report, report_url=None, reproduce_command=reproduce_command(report))
    write_report_folder(
        args.out,
        report,
        result.tensors,
        card,
        overwrite=args.overwrite,
        plots=not args.no_plots,
        samples=result.samples,
    )
    print(summary_table(report, args.out, plots=not args.no_plots))
    return 0
