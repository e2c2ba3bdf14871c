"""The GitHub workflows validate against the workflow JSON Schema (offline, bundled)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from depthcard.schemas.bot_config import load_bot_config

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_match_the_github_schema():
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(exe).exists():
        pytest.skip("check-jsonschema is not installed (test extra)")
    cmd = [exe, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_watch_workflow_is_a_dry_run_with_a_concurrency_group():
    flow = yaml.safe_load((ROOT / ".github/workflows/watch.yml").read_text())
    assert flow["concurrency"]["group"] and flow[True]["schedule"]  # `on:` parses as True
    assert "workflow_dispatch" in flow[True]
    text = (ROOT / ".github/workflows/watch.yml").read_text()
    assert "secrets.HF_TOKEN" in text and "--publish" in text


def test_example_config_is_valid_and_dry_run():
    cfg = load_bot_config(ROOT / "bot" / "example-config.yaml")
    assert cfg.dry_run and cfg.keep_state_in_results_repo
