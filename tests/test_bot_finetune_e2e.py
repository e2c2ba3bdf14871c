"""A fine-tune of an instruct model on the Hub double becomes ONE three-model audit whose PR
goes to the fine-tune's card; the state file gains the fine-tune's columns by migration."""

from __future__ import annotations

import sqlite3

import pytest

from depthcard.analysis import ANALYSIS_VERSION
from depthcard.bot import discover
from depthcard.bot.hub import Hub
from depthcard.bot.state import StateStore, audit_key
from depthcard.bot.state_schema import AUDIT_COLUMNS
from depthcard.lab.erode import erode_organism
from depthcard.report.card import parse_card_section
from depthcard.schemas.bot_config import load_bot_config
from tests.bot_helpers import (
    BASE,
    CALIBRATION,
    CHILD,
    REAL_AUDIT_COMMAND,
    REAL_AUDIT_SETTINGS,
    TOKEN,
    add_pair,
    bot_env,
    depthcard,
    write_config,
)
from tests.hub_double import HubDouble

FT = "acme/tiny-medical"
FT_README = (
    "---\nlicense: apache-2.0\nbase_model: acme/tiny-Instruct\nbase_model_relation: finetune\n"
    "---\n# Tiny medical\n\nA benign fine-tune of tiny-Instruct.\n"
)


def _watch(cfg, env):
    done = depthcard(["watch", "--once", "--config", str(cfg)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert TOKEN not in done.stdout + done.stderr
    return done


@pytest.mark.slow
@pytest.mark.e2e
def test_watch_audits_an_instruct_finetune_as_three_models_on_its_card(tmp_path):
    eroded = tmp_path / "eroded"
    erode_organism(CALIBRATION / "instruct", eroded, steps=3, lr=1e-3)
    with HubDouble(token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        ft_sha = hub.add_folder(FT, eroded, readme=FT_README, parameters=400_000)
        settings = {**REAL_AUDIT_SETTINGS, "fragility": None}
        cfg = write_config(tmp_path, audit_command=REAL_AUDIT_COMMAND, audit=settings,
                           max_parallel=2)  # fmt: skip
        env = bot_env(hub, tmp_path)

        out = _watch(cfg, env)
        assert "published 2" in out.stdout  # the instruct's own pair audit, and the fine-tune's
        assert [(p.num, p.author) for p in hub.prs(FT)] == [(1, "depthcard-bot")]
        assert len(hub.prs(CHILD)) == 1 and hub.prs(BASE) == []
        pr_readme = hub.readme(FT, "refs/pr/1")
        assert "kept **" in pr_readme  # the erosion paragraph
        card = parse_card_section(pr_readme)
        key = f"{base_sha}/{child_sha}/{ft_sha}/{ANALYSIS_VERSION}"
        assert card.kind == "three-model" and card.audit_key == key
        assert card.third.revision == ft_sha and card.child.revision == child_sha
        assert card.base.revision == base_sha
        assert hub.readme(FT) == FT_README  # main is untouched: it is a PR
        pr = hub.prs(FT)[0]
        assert FT in pr.title and ft_sha[:7] in pr.title
        assert "Fine-tune audit" in pr.description and f"--third {FT}@{ft_sha}" in pr.description

        store = StateStore(load_bot_config(cfg).state_path)
        row = store.get(key)
        assert (row.state, row.third_repo, row.third_sha) == ("published", FT, ft_sha)
        assert row.target_repo == FT and row.child_repo == CHILD and row.base_repo == BASE
        assert [r.key for r in store.rows() if r.third_repo] == [key]  # one three-model audit
        store.close()

        refs = {repo: dict(hub.repo(repo).refs) for repo in (FT, CHILD)}
        writes = len(_writes(cfg))
        _watch(cfg, env)  # second run: nothing new, nothing written
        assert {repo: dict(hub.repo(repo).refs) for repo in (FT, CHILD)} == refs
        assert len(_writes(cfg)) == writes and len(hub.prs(FT)) == 1


def _writes(cfg) -> list[dict]:
    store = StateStore(load_bot_config(cfg).state_path)
    try:
        return store.writes()
    finally:
        store.close()


def test_finetune_whose_parent_has_no_base_is_skipped_with_a_reason(tmp_path):
    with HubDouble() as hub:
        hub.add_folder("acme/lone-Instruct", CALIBRATION / "instruct", readme="# lone\n",
                       parameters=400_000)  # fmt: skip
        readme = FT_README.replace("tiny-Instruct", "lone-Instruct")
        hub.add_folder("acme/lone-ft", CALIBRATION / "instruct", readme=readme)
        cfg = load_bot_config(write_config(tmp_path))
        api = Hub(None, endpoint=hub.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        store = StateStore(cfg.state_path)
        key = discover.examine_child(api, store, cfg, "acme/lone-ft", "a1")
        row = store.get(key)
        assert row.state == "skipped" and row.child_repo == "acme/lone-ft"
        assert "fine-tune of instruct model acme/lone-Instruct" in row.reason


def test_finetune_with_another_shape_is_skipped(tmp_path):
    with HubDouble() as hub:
        add_pair(hub)
        files = {p.name: p.read_bytes() for p in (CALIBRATION / "instruct").iterdir()}
        files["config.json"] = files["config.json"].replace(b'"hidden_size": ', b'"hidden_size": 1')
        hub.add_repo(FT, {**files, "README.md": FT_README})
        cfg = load_bot_config(write_config(tmp_path))
        api = Hub(None, endpoint=hub.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        store = StateStore(cfg.state_path)
        row = store.get(discover.examine_child(api, store, cfg, FT, "a1"))
        assert (row.state, row.third_repo, row.child_repo) == ("skipped", FT, CHILD)
        assert "hidden_size differs" in row.reason and len(row.key.split("/")) == 4


def test_a_three_model_row_left_discovered_by_a_crash_is_checked_on_resume(tmp_path):
    with HubDouble() as hub:
        base_sha, child_sha = add_pair(hub)
        ft_sha = hub.add_folder(FT, CALIBRATION / "instruct", readme=FT_README)
        cfg = load_bot_config(write_config(tmp_path))
        api = Hub(None, endpoint=hub.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        store = StateStore(cfg.state_path)
        store.add(base_repo=BASE, base_sha=base_sha, child_repo=CHILD, child_sha=child_sha,
                  third_repo=FT, third_sha=ft_sha, analysis_version="a1",
                  state="discovered")  # fmt: skip
        discover.resume_discovered(api, store, cfg)
        assert store.get(f"{base_sha}/{child_sha}/{ft_sha}/a1").state == "queued"
        assert discover.examine_child(api, store, cfg, FT, "a1") == (
            f"{base_sha}/{child_sha}/{ft_sha}/a1")  # fmt: skip
        assert len(store.rows()) == 1  # the same key: no second audit


OLD_SCHEMA = """
CREATE TABLE audits (
    key TEXT PRIMARY KEY, base_repo TEXT, base_sha TEXT, child_repo TEXT NOT NULL,
    child_sha TEXT NOT NULL, analysis_version TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT, parameters INTEGER, report_dir TEXT,
    job_id TEXT, pr_num INTEGER, lease_owner TEXT, lease_until REAL,
    not_before REAL NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL
);
INSERT INTO audits (key, base_repo, base_sha, child_repo, child_sha, analysis_version, state,
    pr_num, created, updated)
VALUES ('b/c/a1', 'acme/x', 'b', 'acme/x-Instruct', 'c', 'a1', 'published', 3, 1, 1);
"""


def test_an_old_state_file_opens_and_gains_the_finetune_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    for _ in range(2):  # the second open finds the columns there already
        store = StateStore(path)
        old = store.get("b/c/a1")
        assert (old.state, old.pr_num, old.third_repo, old.target_repo) == (
            "published", 3, None, "acme/x-Instruct")  # fmt: skip
        store.close()
    store = StateStore(path)
    assert store.add(base_repo="acme/x", base_sha="b", child_repo="acme/x-Instruct",
                     child_sha="c", third_repo="kim/x-ft", third_sha="f", analysis_version="a1",
                     state="discovered")  # fmt: skip
    row = store.get(audit_key("b", "c", "a1", "f"))
    assert row.key == "b/c/f/a1" and row.target_repo == "kim/x-ft"
    assert store.get("b/c/a1").state == "published"
    store.close()
    with sqlite3.connect(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(audits)")}
    assert {name for name, _ in AUDIT_COLUMNS} <= columns
