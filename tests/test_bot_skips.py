"""Repos the bot must not audit are skipped with the reason shown by `depthcard status`."""

from __future__ import annotations

import json

import pytest

from depthcard.analysis import ANALYSIS_VERSION
from depthcard.bot.dispatch import LocalBackend
from depthcard.bot.hub import Hub
from depthcard.bot.state import StateStore
from depthcard.bot.watch import Round, run_round
from depthcard.cli.bot_commands import status_table
from depthcard.schemas.bot_config import load_bot_config
from tests.bot_helpers import CALIBRATION, add_pair, bot_env, depthcard, write_config
from tests.hub_double import HubDouble


def _child_files(**config_changes) -> dict:
    files = {p.name: p.read_bytes() for p in (CALIBRATION / "instruct").iterdir()}
    config = json.loads(files["config.json"])
    config.update(config_changes)
    files["config.json"] = json.dumps(config)
    return files


def _populate(hub: HubDouble) -> None:
    add_pair(hub)
    for name in ("remote", "pickle", "gated", "huge", "optout", "adapter", "wide"):
        hub.add_folder(f"acme/{name}", CALIBRATION / "base", parameters=400_000)
    card = "---\nbase_model: acme/{b}\n{extra}---\n# card\n"
    hub.add_repo("acme/remote-Instruct", {**_child_files(auto_map={"AutoModel": "x.Y"}),
                 "README.md": card.format(b="remote", extra="")})  # fmt: skip
    pickle_files = {k: v for k, v in _child_files().items() if not k.endswith(".safetensors")}
    hub.add_repo("acme/pickle-Instruct", {**pickle_files, "pytorch_model.bin": b"PK\x03\x04",
                 "README.md": card.format(b="pickle", extra="")})  # fmt: skip
    hub.add_repo("acme/gated-Instruct", {**_child_files(),
                 "README.md": card.format(b="gated", extra="")}, gated="auto")  # fmt: skip
    hub.add_repo("acme/huge-Instruct", {**_child_files(),
                 "README.md": card.format(b="huge", extra="")}, parameters=10**12)  # fmt: skip
    hub.add_repo("acme/optout-Instruct", {**_child_files(),
                 "README.md": card.format(b="optout", extra="depthcard: opt-out\n")})  # fmt: skip
    hub.add_repo("acme/adapter-Instruct", {**_child_files(), "README.md": card.format(
        b="adapter", extra="base_model_relation: adapter\n")})  # fmt: skip
    hub.add_repo("acme/wide-Instruct", {**_child_files(hidden_size=128),
                 "README.md": card.format(b="wide", extra="")})  # fmt: skip


@pytest.mark.slow
def test_skips_have_reasons_in_status(tmp_path):
    with HubDouble() as hub:
        _populate(hub)
        # No server filters: every repo reaches the bot's own rules, as webhook events do.
        cfg = load_bot_config(
            write_config(tmp_path, parameter_budget=1_000_000_000, server_filters=False)
        )
        api = Hub(None, endpoint=hub.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        store = StateStore(cfg.state_path)
        counts = run_round(Round(api, store, cfg, LocalBackend(cfg), ANALYSIS_VERSION))
        assert counts == {"published": 1, "skipped": 6, "opted_out": 1}
        reasons = {r.child_repo: r.reason for r in store.rows() if r.state != "published"}
        assert "needs remote code" in reasons["acme/remote-Instruct"]
        assert "pickle-only weights" in reasons["acme/pickle-Instruct"]
        assert "gated" in reasons["acme/gated-Instruct"]
        assert "over budget" in reasons["acme/huge-Instruct"]
        assert "hidden_size differs" in reasons["acme/wide-Instruct"]
        assert "card metadata" in reasons["acme/optout-Instruct"]
        assert "not a fine-tune" in reasons["acme/adapter-Instruct"]
        # Only the one real pair got a PR; no file of the gated repo was ever downloaded.
        assert [r.child_repo for r in store.rows("published")] == ["acme/tiny-Instruct"]
        assert not [p for m, p, _ in hub.requests if "gated-Instruct/resolve" in p]
        table = status_table(store.rows())
        for needle in ("needs remote code", "pickle-only", "gated", "over budget", "opted out"):
            assert needle in table

        shown = depthcard(["status", "--config", str(write_config(
            tmp_path, parameter_budget=1_000_000_000))], bot_env(hub, tmp_path))  # fmt: skip
        assert shown.returncode == 0 and "over budget" in shown.stdout


@pytest.mark.slow
def test_retry_requeues_a_skipped_audit_and_rejects_unknown_keys(tmp_path):
    with HubDouble() as hub:
        cfg_path = write_config(tmp_path)
        store = StateStore(tmp_path / "state.sqlite")
        store.add(base_repo="a/b", base_sha="1" * 40, child_repo="a/b-it", child_sha="2" * 40,
                  analysis_version="a1", state="skipped", reason="gated")  # fmt: skip
        key = f"{'1' * 40}/{'2' * 40}/a1"
        env = bot_env(hub, tmp_path)
        done = depthcard(["retry", key, "--config", str(cfg_path)], env)
        assert done.returncode == 0 and store.get(key).state == "queued"
        bad = depthcard(["retry", "nope", "--config", str(cfg_path)], env)
        assert bad.returncode == 2 and "no audit with key" in bad.stderr
