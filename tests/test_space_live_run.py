"""The live audit's process handling, without running a whole audit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from depthcard.space import live_run


def test_the_bundled_pair_is_found_and_the_command_is_cpu_float32(tmp_path):
    pair = live_run.demo_pair()
    assert pair is not None and all((p / "config.json").is_file() for p in pair)
    cmd = live_run.audit_command(*pair, tmp_path / "out", 8, ("--no-ablation",))
    assert cmd[:3] == [sys.executable, "-m", "depthcard"]
    assert cmd[cmd.index("--device") + 1] == "cpu" and cmd[cmd.index("--dtype") + 1] == "float32"
    assert cmd[-3:] == ["--max-prompts", "8", "--no-ablation"]


def test_a_run_past_its_time_limit_is_stopped(tmp_path, monkeypatch):
    # A command that would sleep for a minute stands in for a stuck audit.
    monkeypatch.setattr(
        live_run,
        "audit_command",
        lambda *a, **k: [sys.executable, "-c", "import time; print('working'); time.sleep(60)"],
    )
    seen = []
    with pytest.raises(live_run.LiveRunError, match="time limit|limit"):
        live_run.run_live_audit(
            Path("b"), Path("c"), tmp_path / "out",
            progress=lambda f, text: seen.append((f, text)), timeout_seconds=1.0,
        )  # fmt: skip
    assert seen and seen[0] == (0.0, "starting the audit")
    assert all(0.0 <= f <= 0.95 for f, _ in seen)


def test_a_failed_audit_reports_its_last_line(tmp_path, monkeypatch):
    monkeypatch.setattr(
        live_run,
        "audit_command",
        lambda *a, **k: [sys.executable, "-c", "import sys; sys.exit('depthcard: error: bad')"],
    )
    with pytest.raises(live_run.LiveRunError, match="exit 1.*bad"):
        live_run.run_live_audit(Path("b"), Path("c"), tmp_path / "out")
