"""Kill the bot (a real SIGKILL of the subprocess) right after each state transition and
restart it: no audit is lost and no PR is duplicated.

The kill comes from `tests.crash_launcher`, which hooks `StateStore.checkpoint`; the bot
itself has no kill switch."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from depthcard.analysis import ANALYSIS_VERSION
from tests.bot_helpers import CHILD, ROOT, add_pair, bot_env, depthcard, write_config
from tests.crash_launcher import KILL_ENV
from tests.hub_double import HubDouble

POINTS = ["discovered", "queued", "running", "succeeded", "pr-written", "published"]


def depthcard_killed_at(point: str, args: list[str], env: dict[str, str]):
    """Run `depthcard -v ARGS` through the crash launcher, set to kill itself at `point`."""
    cmd = [sys.executable, "-m", "tests.crash_launcher", "-v", *args]
    env = {**env, KILL_ENV: point}
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_transition_then_resume(tmp_path, point):
    with HubDouble() as hub:
        base_sha, child_sha = add_pair(hub)
        cfg = write_config(tmp_path)
        watch = ["watch", "--once", "--config", str(cfg)]
        killed = depthcard_killed_at(point, watch, bot_env(hub, tmp_path))
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert len(hub.prs(CHILD)) == (1 if point in ("pr-written", "published") else 0)

        done = depthcard(["watch", "--once", "--config", str(cfg)], bot_env(hub, tmp_path))
        assert done.returncode == 0, done.stderr[-2000:]
        assert [p.num for p in hub.prs(CHILD)] == [1]
        db = sqlite3.connect(tmp_path / "state.sqlite")
        rows = db.execute("SELECT key, state, pr_num FROM audits").fetchall()
        assert rows == [(f"{base_sha}/{child_sha}/{ANALYSIS_VERSION}", "published", 1)]
        opened = db.execute(
            "SELECT COUNT(*) FROM hub_writes WHERE action = 'open-pr' AND phase = 'intent'"
        ).fetchone()[0]
        assert opened == 1  # the restart found its PR instead of opening another

        again = depthcard(["watch", "--once", "--config", str(cfg)], bot_env(hub, tmp_path))
        assert again.returncode == 0 and len(hub.prs(CHILD)) == 1
