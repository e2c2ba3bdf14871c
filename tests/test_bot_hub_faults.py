"""Hub faults from the double (429 with Retry-After, 500, timeouts, a commit conflict): the
wrapper backs off as asked, and a round that meets them loses no state and opens no extra PR."""

from __future__ import annotations

import logging

import pytest

from depthcard.bot.dispatch import LocalBackend
from depthcard.bot.hub import Hub, HubUnavailable
from depthcard.bot.state import StateStore
from depthcard.bot.watch import Round, run_round
from depthcard.schemas.bot_config import load_bot_config
from tests.bot_helpers import CHILD, TOKEN, add_pair, write_config
from tests.hub_double import HubDouble

INFO = r"^/api/models/acme/tiny-Instruct(/revision/.*)?$"


@pytest.fixture
def hub_double():
    with HubDouble(token=TOKEN) as double:
        yield double


def make_hub(double, tmp_path, sleeps, **kw) -> Hub:
    return Hub(TOKEN, endpoint=double.url, sleep=sleeps.append, cache_dir=tmp_path / "cache",
               **{"retries": 3, "timeout": 5.0, **kw})  # fmt: skip


def make_round(double, tmp_path, sleeps) -> Round:
    cfg = load_bot_config(write_config(tmp_path))
    return Round(make_hub(double, tmp_path, sleeps), StateStore(cfg.state_path), cfg,
                 LocalBackend(cfg), "a1")  # fmt: skip


def test_429_waits_what_retry_after_says(hub_double, tmp_path):
    add_pair(hub_double)
    fault = hub_double.fault("GET", INFO, status=429, retry_after=7, times=2)
    sleeps: list[float] = []
    info = make_hub(hub_double, tmp_path, sleeps).model_info(CHILD)
    assert info.id == CHILD and fault.hits == 2 and sleeps == [7.0, 7.0]


def test_500_backs_off_exponentially_then_gives_up(hub_double, tmp_path):
    add_pair(hub_double)
    hub_double.fault("GET", INFO, status=500, times=10)
    sleeps: list[float] = []
    with pytest.raises(HubUnavailable, match="HTTP 500"):
        make_hub(hub_double, tmp_path, sleeps).model_info(CHILD)
    assert sleeps == [1.0, 2.0, 4.0]


def test_timeouts_are_retried(hub_double, tmp_path):
    add_pair(hub_double)
    fault = hub_double.fault("GET", INFO, status=None, delay=1.0, times=1)
    sleeps: list[float] = []
    info = make_hub(hub_double, tmp_path, sleeps, timeout=0.3).model_info(CHILD)
    assert info.id == CHILD and fault.hits == 1 and sleeps == [1.0]


def test_round_survives_faults_without_losing_state_or_duplicating(hub_double, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    add_pair(hub_double)
    sleeps: list[float] = []
    r = make_round(hub_double, tmp_path, sleeps)
    hub_double.fault("GET", INFO, status=429, retry_after=3, times=1)
    hub_double.fault("POST", r"/commit/", status=500, times=1)  # the PR commit fails once
    counts = run_round(r)
    assert counts == {"succeeded": 1} and hub_double.prs(CHILD) == []
    assert 3.0 in sleeps  # Retry-After respected
    assert run_round(r) == {"published": 1}
    assert [p.num for p in hub_double.prs(CHILD)] == [1]
    assert run_round(r) == {"published": 1} and len(hub_double.prs(CHILD)) == 1
    phases = [(w["action"], w["phase"]) for w in r.store.writes()]
    assert phases == [("open-pr", "intent"), ("open-pr", "failed"), ("open-pr", "intent"),
                      ("open-pr", "done")]  # fmt: skip
    assert TOKEN not in caplog.text
    assert all(h == f"Bearer {TOKEN}" for h in hub_double.auth_headers)


def test_commit_conflict_supersedes_the_old_revision(hub_double, tmp_path):
    base_sha, child_sha = add_pair(hub_double)
    r = make_round(hub_double, tmp_path, [])
    r.cfg = r.cfg.model_copy(update={"recheck_limit": 0})
    run_round_until = run_round
    # The owner pushes between the audit and the PR: the commit's parent_commit is stale.
    original = r.backend.poll

    def poll_then_push(job, handle):
        outcome = original(job, handle)
        hub_double.push(CHILD, {"README.md": "edited by the owner\n"})
        return outcome

    r.backend.poll = poll_then_push
    assert run_round_until(r) == {"skipped": 1}
    row = r.store.rows()[0]
    assert "superseded" in row.reason and hub_double.prs(CHILD) == []
    assert any(w["phase"] == "failed" and "conflict" in w["detail"] for w in r.store.writes())
