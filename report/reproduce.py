"""The reproduce command on the card: `depthcard audit` at the same revisions and settings.

`AUDIT_FLAGS` is the one table of which `AuditConfig` fields have a `depthcard audit` flag.
The CLI builds its options from it (type, choices, default and help come from the field),
and `reproduce_command` writes a flag for every field whose value differs from the default
of `AuditConfig()`, so a setting cannot be added to one side and forgotten on the other.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from depthcard.schemas.errors import UserError
from depthcard.schemas.report import DEFAULT_PROMPT_SETS, AuditConfig, AuditReport, ModelRef

# The help sections of `depthcard audit`, in the order the help lists them: what is audited,
# what changes the numbers, what changes only the time and memory it takes, what is written.
FlagGroup = Literal["input", "measurement", "cost controls", "output"]


@dataclass(frozen=True)
class ConfigFlag:
    """One `depthcard audit` flag and the config field it sets.

    `path` is the field's name, or (section, name) for a field of a nested settings model.
    `group` is the help section the flag is listed in. A `switch_off` flag takes no value: it
    turns a bool field off, or an optional settings section (e.g. `fragility`) into None;
    its `help` says what switching off does (the field's description says what the setting
    does when on). `none_word` is the value that stands for the field's None on the command
    line (`--dtype auto`).
    """

    flag: str
    path: tuple[str, ...]
    group: FlagGroup
    switch_off: bool = False
    help: str | None = None
    none_word: str | None = None

    def __post_init__(self) -> None:
        if self.switch_off and not self.help:
            raise ValueError(f"{self.flag}: a switch-off flag says in `help` what it skips")

    @property
    def dest(self) -> str:
        """The argparse attribute the flag's value is stored in."""
        return "_".join(self.path) if not self.switch_off else f"no_{self.path[-1]}"


AUDIT_FLAGS: tuple[ConfigFlag, ...] = (
    ConfigFlag("--device", ("device",), "cost controls"),
    ConfigFlag("--dtype", ("dtype",), "cost controls", none_word="auto"),
    ConfigFlag("--batch-size", ("batch_size",), "cost controls"),
    ConfigFlag("--max-prompts", ("max_prompts",), "cost controls"),
    ConfigFlag("--seed", ("seed",), "measurement"),
    ConfigFlag("--position", ("position",), "measurement"),
    ConfigFlag("--num-directions", ("num_directions",), "measurement"),
    ConfigFlag(
        "--no-ablation",
        ("ablation",),
        "cost controls",
        switch_off=True,
        help="skip the abliteration-cost stage (no min_k, no refusal curve)",
    ),
    ConfigFlag("--judge", ("judge",), "measurement"),
    ConfigFlag("--max-new-tokens", ("max_new_tokens",), "measurement"),
    ConfigFlag("--max-broken-share", ("max_broken_share",), "measurement"),
    ConfigFlag("--kl-budget", ("kl_budget",), "measurement"),
    ConfigFlag("--min-k-search", ("min_k_search",), "cost controls"),
    ConfigFlag("--capability-ce", ("capability_ce",), "cost controls"),
    ConfigFlag(
        "--no-reuse-opening",
        ("reuse_opening",),
        "cost controls",
        switch_off=True,
        help="run every prompt's opening tokens (system prompt, role markers) in each "
        "first-token pass instead of reusing their cache: slower, same numbers",
    ),
    ConfigFlag("--capability-k", ("capability_k",), "measurement"),
    ConfigFlag("--eval-fraction", ("eval_fraction",), "measurement"),
    ConfigFlag("--layer-bootstraps", ("layer_bootstraps",), "measurement"),
    ConfigFlag("--permutations", ("permutations",), "measurement"),
    ConfigFlag("--bootstraps", ("bootstraps",), "measurement"),
    ConfigFlag(
        "--no-fragility",
        ("fragility",),
        "cost controls",
        switch_off=True,
        help="skip the fragility stage (no sharpness, no forecast)",
    ),
    ConfigFlag("--fragility-steps", ("fragility", "steps"), "measurement"),
    ConfigFlag("--power-iterations", ("fragility", "power_iterations"), "cost controls"),
    ConfigFlag("--fragility-lr", ("fragility", "learning_rate"), "measurement"),
)


def flag_value(cfg: AuditConfig, flag: ConfigFlag) -> Any:
    """The value `cfg` holds for `flag` (None under a section that is switched off)."""
    value: Any = cfg
    for name in flag.path:
        if value is None:
            return None
        value = getattr(value, name)
    return value


def config_flags(cfg: AuditConfig) -> list[str]:
    """Every setting of `cfg` that differs from `AuditConfig()`'s default, as flags.

    Fields without a flag (eps, layer_window, thresholds) cannot be changed from the command
    line, so they only differ in reports written by code; they are left out.
    """
    default, words = AuditConfig(), []
    for flag in AUDIT_FLAGS:
        value = flag_value(cfg, flag)
        if flag.switch_off:
            if value is None or value is False:
                words.append(flag.flag)
        elif value is not None and value != flag_value(default, flag):
            words += [flag.flag, str(value)]
    return words


def unflagged_settings(cfg: AuditConfig) -> list[str]:
    """Fields of `cfg` that differ from `AuditConfig()` but have no `depthcard audit` flag
    (`section.name` inside a settings section): a command line cannot carry them."""
    default, flagged = AuditConfig(), {flag.path for flag in AUDIT_FLAGS}
    names: list[str] = []
    for name in AuditConfig.model_fields:
        mine, theirs = getattr(cfg, name), getattr(default, name)
        if mine == theirs or (name,) in flagged:
            continue
        if isinstance(mine, BaseModel) and isinstance(theirs, BaseModel):
            names += [f"{name}.{sub}" for sub in type(mine).model_fields
                      if getattr(mine, sub) != getattr(theirs, sub)
                      and (name, sub) not in flagged]  # fmt: skip
        else:
            names.append(name)
    return names


def audit_words(cfg: AuditConfig) -> list[str]:
    """The `depthcard audit` flags that make the audit's config `cfg` (the bot's settings).

    Raises:
        UserError: `cfg` changes a field that has no flag, which the audit would not see.
    """
    unflagged = unflagged_settings(cfg)
    if unflagged:
        raise UserError(
            f"audit settings without a `depthcard audit` flag cannot be passed to an audit: "
            f"{', '.join(unflagged)} (leave them at their defaults)"
        )
    return config_flags(cfg)


def _model_name(ref: ModelRef) -> str:
    return f"{ref.repo_id}@{ref.revision}" if ref.source == "hub" else str(ref.path)


def reproduce_command(report: AuditReport) -> str:
    """The command that re-runs this audit at the same revisions and settings.

    Models are pinned to their revisions; every config value that differs from the default
    becomes a flag (the dtype always does: the report records the one used); a prompt set
    that is not the built-in default is named by its file.

    Example:
        `depthcard audit org/base@<sha> org/chat@<sha> --out audit --max-prompts 64
        --dtype bfloat16`
    """
    models = report.models
    words = (
        ["--child-only", _model_name(models.child)]
        if models.base is None
        else [_model_name(models.base), _model_name(models.child)]
    )
    if models.third is not None:
        words += ["--third", _model_name(models.third)]
    parts = ["depthcard", "audit", *words, "--out", "audit", *config_flags(report.config)]
    for ref in report.prompt_sets:  # a set that is not the built-in default: name its file
        if ref.role == "domain" or DEFAULT_PROMPT_SETS.get(ref.role) != ref.name:
            parts += [f"--{ref.role}", f"{ref.name}.yaml"]
    return shlex.join(parts)
