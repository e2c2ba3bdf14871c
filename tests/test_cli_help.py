"""`depthcard audit --help`: grouped like `hf` and `git` group theirs, and every line true."""

from __future__ import annotations

import argparse
import re

import pytest

from depthcard.cli.audit_command import GROUPS, config_from_args
from depthcard.cli.main import build_parser
from depthcard.report.reproduce import AUDIT_FLAGS
from depthcard.schemas.report import AuditConfig


def _audit_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["audit"]


def _help() -> str:
    return _audit_parser().format_help()


def _sections(text: str) -> dict[str, str]:
    """Help text by section title (a line with no indent that ends in a colon)."""
    parts = re.split(r"^(\S[^\n]*):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _parse(*words: str) -> AuditConfig:
    return config_from_args(build_parser().parse_args(["audit", "--demo", "--out", "x", *words]))


def test_options_are_listed_in_their_groups() -> None:
    sections = _sections(_help())
    assert list(GROUPS) == [t for t in sections if t in GROUPS]
    for flag in AUDIT_FLAGS:
        assert re.search(rf"^  {flag.flag}\b", sections[flag.group], re.M), flag.flag
    assert "--out" in sections["output"] and "--no-plots" in sections["output"]
    assert "--harmful" in sections["input"] and "--child-only" in sections["input"]


def test_no_help_line_speaks_of_none_or_reads_as_skip_run() -> None:
    text = " ".join(_help().split())
    assert "None" not in text
    assert "skip: " not in text
    for flag in AUDIT_FLAGS:
        if flag.switch_off:
            assert flag.help and flag.help[0].islower(), flag.flag


def test_every_listed_choice_is_accepted() -> None:
    for action in _audit_parser()._actions:
        if not action.choices or not action.option_strings:
            continue
        for choice in action.choices:
            args = build_parser().parse_args(
                ["audit", "--demo", "--out", "x", action.option_strings[0], str(choice)]
            )
            config_from_args(args)  # the config takes it too


def test_defaults_shown_are_the_config_defaults() -> None:
    text = " ".join(_help().split())
    assert "--batch-size {N,auto} " in text and "(default: 16)" in text
    assert "--dtype {auto,float32,bfloat16,float16}" in text and "(default: auto)" in text
    assert _parse() == AuditConfig()


def test_dtype_and_batch_size_auto_are_the_config_auto() -> None:
    cfg = _parse("--dtype", "auto", "--batch-size", "auto")
    assert cfg.dtype is None and cfg.batch_size == "auto"
    on_gpu, on_cpu = cfg.with_concrete_dtype(True), cfg.with_concrete_dtype(False, "bfloat16")
    assert (on_gpu.dtype, on_gpu.batch_size) == ("bfloat16", 64)
    assert (on_cpu.dtype, on_cpu.batch_size) == ("bfloat16", 16)
    assert _parse("--dtype", "float16", "--batch-size", "8").model_dump(
        include={"dtype", "batch_size"}
    ) == {"dtype": "float16", "batch_size": 8}
    with pytest.raises(SystemExit):
        _parse("--dtype", "fp8")
