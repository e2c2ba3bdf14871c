"""Logs the bot's operators can read and collect: UTC timestamps on watch/serve, JSON lines
with --log-format json, and `status --json` as a validated document."""

from __future__ import annotations

import json
import logging
import re

import pytest

from depthcard.bot.state import StateStore
from depthcard.cli import logs
from depthcard.cli.main import main
from depthcard.schemas.bot_status import BotStatus
from tests.bot_helpers import write_config


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _line(capsys_or_stream, fmt: str, command: str | None) -> str:
    logs.configure(logging.INFO, fmt, command)
    logging.getLogger("depthcard.bot.watch").info("round done: %d audits", 3)
    return capsys_or_stream.readouterr().err.strip().splitlines()[-1]


def test_watch_and_serve_lines_start_with_a_utc_time(capsys, restore_logging):
    line = _line(capsys, "text", "watch")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO depthcard.bot.watch: ", line)
    assert line.endswith("round done: 3 audits")
    # a one-shot command keeps its short lines
    assert _line(capsys, "text", "audit") == "INFO depthcard.bot.watch: round done: 3 audits"


def test_json_log_lines_are_one_object_each(capsys, restore_logging):
    entry = json.loads(_line(capsys, "json", "serve"))
    assert entry["level"] == "INFO" and entry["logger"] == "depthcard.bot.watch"
    assert entry["message"] == "round done: 3 audits" and entry["time"].endswith("Z")


def test_status_json_is_a_bot_status_document(tmp_path, capsys, restore_logging):
    config = write_config(tmp_path)
    store = StateStore(tmp_path / "state.sqlite")
    pair = {"base_repo": "acme/tiny", "base_sha": "b" * 40, "child_repo": "acme/tiny-it"}
    store.add(**pair, child_sha="c" * 40, analysis_version="a1", state="skipped", reason="gated")
    store.close()
    assert main(["status", "--json", "--config", str(config)]) == 0
    status = BotStatus.model_validate_json(capsys.readouterr().out)
    assert status.counts == {"skipped": 1}
    (audit,) = status.audits
    assert audit.card_repo == "acme/tiny-it" and audit.reason == "gated"
    assert audit.key == f"{'b' * 40}/{'c' * 40}/a1" and audit.updated.endswith("Z")


def test_log_format_is_a_global_option():
    from depthcard.cli.main import build_parser

    args = build_parser().parse_args(["--log-format", "json", "watch", "--once"])
    assert args.log_format == "json" and args.command == "watch"
