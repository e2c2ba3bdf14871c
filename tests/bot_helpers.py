"""Shared set-up of the bot tests: a Hub double holding a base/instruct pair, a config, and
`depthcard` run as a real subprocess pointed at the double."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.hub_double import HubDouble

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "analysis" / "calibration"
TOKEN = "hf_TESTtoken_do_not_log_0123456789"
BASE, CHILD = "acme/tiny", "acme/tiny-Instruct"
CHILD_README = (
    "---\r\nlicense: apache-2.0\r\nbase_model: acme/tiny\r\ntags:\r\n- ünïcode\r\n---\r\n"
    "# Tiny Instruct ✓\r\n\r\nA card with CRLF line endings and a trailing space. \r\n"
)
FAKE_AUDIT = [sys.executable, str(ROOT / "tests" / "fake_audit.py")]
# 16 prompts a set: the held-out split needs at least 8 in each eval half.
REAL_AUDIT_ARGS = ["--no-ablation", "--max-prompts", "16", "--no-plots"]
# The same as the bot's settings (AuditConfig fields) and its output-only flag.
REAL_AUDIT_SETTINGS = {"ablation": False, "max_prompts": 16}
REAL_AUDIT_COMMAND = ["depthcard", "audit", "--no-plots"]


def add_pair(double: HubDouble, readme: str = CHILD_README, **child_kw) -> tuple[str, str]:
    """The calibration organisms as acme/tiny (base) and acme/tiny-Instruct; returns shas."""
    base = double.add_folder(BASE, CALIBRATION / "base", readme="# tiny base\n", parameters=400_000)
    kw = {"parameters": 400_000, **child_kw}
    child = double.add_folder(CHILD, CALIBRATION / "instruct", readme=readme, **kw)
    return base, child


def write_config(tmp: Path, **fields) -> Path:
    """A bot config in `tmp` with test defaults (fake audit, no dry run, bot user)."""
    data = {
        "organizations": ["acme"],
        "dry_run": False,
        "hub_user": "depthcard-bot",
        "state_path": str(tmp / "state.sqlite"),
        "work_dir": str(tmp / "work"),
        "audit_command": FAKE_AUDIT,
        "retry_base_seconds": 0,
        "hub_retries": 2,
        "http_timeout_seconds": 5,
        **fields,
    }
    path = tmp / "bot.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def bot_env(double: HubDouble, tmp: Path, **extra: str) -> dict[str, str]:
    """Environment of a bot subprocess: the double as the Hub, a private cache, the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DEPTHCARD_"))}
    env.update(
        HF_ENDPOINT=double.url,
        HF_HOME=str(tmp / "hf-home"),
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def depthcard(args: list[str], env: dict[str, str], timeout: float = 240):
    """Run `depthcard ARGS` (verbose) in a subprocess; returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "depthcard", "-v", *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def outside_markers(text: str) -> tuple[str, str]:
    """(text before the start marker, text after the end marker)."""
    start = text.index("<!-- depthcard:start")
    end = text.index("<!-- depthcard:end -->") + len("<!-- depthcard:end -->")
    return text[:start], text[end:]
