"""Hub faults from the double (429 with Retry-After, 500, timeouts, a card that moved): the
wrapper backs off as asked, and a round that meets them loses no state and opens no extra PR."""

from __future__ import annotations

import logging

import pytest

from depthcard.analysis import ANALYSIS_VERSION
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
                 LocalBackend(cfg), ANALYSIS_VERSION)  # fmt: skip


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


@pytest.mark.slow
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


def _push_after_audit(r, hub_double, files):
    """The owner pushes `files` between the audit and the PR."""
    original = r.backend.poll

    def poll_then_push(job, handle):
        outcome = original(job, handle)
        hub_double.push(CHILD, files)
        return outcome

    r.backend.poll = poll_then_push


def test_double_bases_a_stale_pr_on_the_old_commit_and_rejects_a_stale_direct_commit(
    hub_double, tmp_path
):
    """huggingface_hub's create_commit docstring: with create_pr a stale parent_commit is
    where the PR starts; without create_pr the commit fails."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    _, old = add_pair(hub_double)
    hub_double.push(CHILD, {"README.md": "newer card\n", "notes.txt": "new"})
    api = HfApi(endpoint=hub_double.url, token=TOKEN)
    info = api.create_commit(CHILD, [CommitOperationAdd("x.txt", b"x")], commit_message="m",
                             create_pr=True, parent_commit=old)  # fmt: skip
    pr_files = hub_double.repo(CHILD).files(f"refs/pr/{info.pr_num}")
    assert "notes.txt" not in pr_files and pr_files["README.md"] != b"newer card\n"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(CHILD, [CommitOperationAdd("x.txt", b"x")], commit_message="m",
                          parent_commit=old)  # fmt: skip
    assert err.value.response.status_code == 412
    assert "x.txt" not in hub_double.repo(CHILD).files("main")


def test_card_edited_after_the_audit_keeps_the_owners_edit(hub_double, tmp_path):
    add_pair(hub_double)
    r = make_round(hub_double, tmp_path, [])
    r.cfg = r.cfg.model_copy(update={"recheck_limit": 0})
    edited = "---\nbase_model: acme/tiny\n---\n# Edited by the owner after the audit\n"
    _push_after_audit(r, hub_double, {"README.md": edited})
    assert run_round(r) == {"published": 1}
    pr_card = hub_double.readme(CHILD, "refs/pr/1")
    assert pr_card.startswith(edited) and "<!-- depthcard:start" in pr_card


def test_new_weights_after_the_audit_supersede_it(hub_double, tmp_path):
    add_pair(hub_double)
    r = make_round(hub_double, tmp_path, [])
    r.cfg = r.cfg.model_copy(update={"recheck_limit": 0})
    _push_after_audit(r, hub_double, {"model.safetensors": b"new weights"})
    assert run_round(r) == {"skipped": 1}
    row = r.store.rows()[0]
    assert "superseded" in row.reason and hub_double.prs(CHILD) == []
    assert any(w["phase"] == "failed" and "weights changed" in w["detail"]
               for w in r.store.writes())  # fmt: skip
