"""The reproduce command on a card re-runs the audit with the settings it was run with."""

import argparse
import shlex

import pytest

from depthcard.analysis.spectrum import DEFAULT_EPS
from depthcard.cli.audit_command import add_arguments, config_from_args
from depthcard.report.reproduce import AUDIT_FLAGS, ConfigFlag, flag_value, reproduce_command
from depthcard.schemas.report import AuditConfig
from depthcard.schemas.sections import FragilitySettings
from tests.report_factory import make_report


def _parse(command: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = shlex.split(command)
    assert words[:2] == ["depthcard", "audit"]
    return parser.parse_args(words[2:])


def test_default_settings_give_a_short_command_pinned_to_revisions() -> None:
    report = make_report()
    command = reproduce_command(report)
    args = _parse(command)
    assert args.base == f"{report.models.base.repo_id}@{report.models.base.revision}"
    assert args.child == f"{report.models.child.repo_id}@{report.models.child.revision}"
    assert "--no-ablation" not in command and "--no-fragility" not in command
    assert "--seed" not in command and "--num-directions" not in command  # defaults stay out
    assert args.dtype == report.config.dtype  # the dtype used is always named


def test_changed_settings_are_carried_into_the_command() -> None:
    cfg = make_report().config.model_copy(
        update={"ablation": False, "fragility": None, "max_new_tokens": 32, "num_directions": 4}
    )
    report = make_report(config=cfg.model_dump())
    args = _parse(reproduce_command(report))
    assert args.no_ablation and args.no_fragility
    assert args.max_new_tokens == 32 and args.num_directions == 4


def _non_default(flag: ConfigFlag):
    """A valid value for `flag`'s field that is not its default."""
    if flag.switch_off:
        return None if flag.path == ("fragility",) else False
    default = flag_value(AuditConfig(), flag)
    others = {
        "device": "cpu",
        "dtype": "float16",
        "position": "suffix",
        "judge": "substring-x",
        "max_prompts": 12,
        "learning_rate": 0.05,
        "max_broken_share": 0.25,
        "kl_budget": 0.35,
        "eval_fraction": 0.4,
        "min_k_search": "all",
        "capability_ce": "judged",
    }
    value = others.get(flag.path[-1], default + 3 if isinstance(default, int) else None)
    assert value is not None and value != default, flag
    return value


def _with(cfg: AuditConfig, flag: ConfigFlag, value) -> AuditConfig:
    if len(flag.path) == 1:
        return cfg.model_copy(update={flag.path[0]: value})
    section, name = flag.path
    inner = getattr(cfg, section).model_copy(update={name: value})
    return cfg.model_copy(update={section: inner})


@pytest.mark.parametrize("flag", AUDIT_FLAGS, ids=lambda f: f.flag)
def test_every_flag_round_trips_through_the_command_and_the_parser(flag: ConfigFlag) -> None:
    """non-default value → reproduce command → CLI parser → the same config."""
    used = make_report().config.model_copy(update={"max_prompts": None, "dtype": "float32"})
    if flag.path == ("dtype",):
        used = used.model_copy(update={"dtype": None})
    changed = _with(used, flag, _non_default(flag))
    report = make_report(config=changed.model_dump())
    command = reproduce_command(report)
    assert flag.flag in shlex.split(command)
    assert config_from_args(_parse(command)) == changed


def test_cli_defaults_are_the_config_defaults() -> None:
    args = _parse("depthcard audit a b --out x")
    assert config_from_args(args) == AuditConfig()
    assert AuditConfig().eps == list(DEFAULT_EPS)  # analysis.spectrum keeps its own copy


def test_flag_help_comes_from_the_field_description() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help()
    assert FragilitySettings.model_fields["steps"].description.rstrip(".") in " ".join(text.split())
    for flag in AUDIT_FLAGS:
        assert flag.flag in text


def test_a_config_value_the_model_refuses_names_the_flag() -> None:
    from depthcard.schemas.errors import UserError

    with pytest.raises(UserError, match="^--batch-size: "):
        config_from_args(_parse("depthcard audit a b --out x --batch-size 0"))
    with pytest.raises(UserError, match="^--fragility-steps: "):
        config_from_args(_parse("depthcard audit a b --out x --fragility-steps 0"))
