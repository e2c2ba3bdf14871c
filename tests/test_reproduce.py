"""The reproduce command on a card re-runs the audit with the settings it was run with."""

import shlex

from depthcard.cli.audit_command import add_arguments, reproduce_command
from tests.report_factory import make_report


def _parse(command: str):
    import argparse

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


def test_changed_settings_are_carried_into_the_command() -> None:
    cfg = make_report().config.model_copy(
        update={"ablation": False, "fragility": None, "max_new_tokens": 32, "num_directions": 4}
    )
    report = make_report(config=cfg.model_dump())
    args = _parse(reproduce_command(report))
    assert args.no_ablation and args.no_fragility
    assert args.max_new_tokens == 32 and args.num_directions == 4
