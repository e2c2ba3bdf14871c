"""Offline and network faults, with the real huggingface_hub client in a subprocess.

With `HF_HUB_OFFLINE=1` a pair already in the Hugging Face cache audits without one request
to the Hub (no `model_info` first), pinned to the cached snapshot's sha. Without a network,
`depthcard audit` says so in one line and exits 2, as `estimate` does.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.bot_helpers import BASE, CHILD, REAL_AUDIT_ARGS, add_pair, bot_env, depthcard
from tests.hub_double import HubDouble


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed, so a connect is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_cached_pair_audits_offline_without_asking_the_hub(tmp_path):
    with HubDouble() as double:
        base_sha, child_sha = add_pair(double)
        env = bot_env(double, tmp_path)
        online = depthcard(["audit", BASE, CHILD, "--out", str(tmp_path / "online"),
                            *REAL_AUDIT_ARGS, "--progress", "off"], env)  # fmt: skip
        assert online.returncode == 0, online.stderr
        before = len(double.requests)
        offline = depthcard(["audit", BASE, CHILD, "--out", str(tmp_path / "offline"),
                             *REAL_AUDIT_ARGS, "--progress", "off"],
                            {**env, "HF_HUB_OFFLINE": "1"})  # fmt: skip
        assert offline.returncode == 0, offline.stderr
        assert double.requests[before:] == []  # not one request, model_info included
    report = json.loads((tmp_path / "offline" / "report.json").read_text())
    assert report["models"]["base"]["revision"] == base_sha
    assert report["models"]["child"]["revision"] == child_sha


def test_offline_without_a_cached_snapshot_is_one_line(tmp_path):
    with HubDouble() as double:
        env = bot_env(double, tmp_path, HF_HUB_OFFLINE="1")
        out = depthcard(["audit", BASE, CHILD, "--out", str(tmp_path / "o")], env)
    assert out.returncode == 2, out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("depthcard: error:")]
    assert ": HF_HUB_OFFLINE is set and the Hugging Face cache has no snapshot" in line
    assert "internal error" not in out.stderr


@pytest.mark.parametrize("command", ["audit", "estimate"])
def test_no_network_is_one_line_and_exit_2(tmp_path, command):
    with HubDouble() as double:
        env = {**bot_env(double, tmp_path), "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    args = [command, BASE, CHILD] + (["--out", str(tmp_path / "o")] if command == "audit" else [])
    out = depthcard(args, env)
    assert out.returncode == 2, out.stderr
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    errors = [x for x in out.stderr.splitlines() if x.startswith("depthcard: error:")]
    assert len(errors) == 1, out.stderr
    if command == "audit":
        assert "cannot reach the Hub (ConnectError" in errors[0]
        assert "HF_HUB_OFFLINE=1" in errors[0]
