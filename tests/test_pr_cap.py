"""The daily cap of new PRs per organisation counts every PR opened or in flight: a failure
frees only the slot of its own attempt, and a conflict recorded before any write (a
superseded audit) frees none."""

from __future__ import annotations

from depthcard.bot.state import StateStore

DAY = 1_000.0


def _store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "state.sqlite", clock=lambda: DAY + 1)


def _open(store: StateStore, repo: str, key: str, cap: int = 1) -> bool:
    return store.reserve_pr("acme", DAY, cap, repo=repo, key=key, detail="t")


def test_a_superseded_audit_frees_no_slot(tmp_path):
    store = _store(tmp_path)
    assert _open(store, "acme/x", "kx")
    store.log_write("acme/x", "open-pr", "done", "kx", "PR #1")
    # publishing acme/y found new weights: a failure logged with no intent before it
    store.log_write("acme/y", "open-pr", "failed", "ky", "conflict: the weights changed")
    assert not _open(store, "acme/z", "kz")


def test_a_failed_attempt_frees_its_own_slot_once(tmp_path):
    store = _store(tmp_path)
    assert _open(store, "acme/x", "kx")
    store.log_write("acme/x", "open-pr", "failed", "kx", "HTTP 500")
    assert _open(store, "acme/x", "kx")  # the retry takes the freed slot
    store.log_write("acme/x", "open-pr", "failed", "kx", "HTTP 500")  # frees the retry's slot
    store.log_write("acme/x", "open-pr", "failed", "kx", "conflict: superseded")  # frees none
    assert _open(store, "acme/y", "ky")
    assert not _open(store, "acme/z", "kz")


def test_other_organisations_and_earlier_days_do_not_count(tmp_path):
    store = StateStore(tmp_path / "state.sqlite", clock=lambda: DAY - 1)
    assert _open(store, "acme/old", "k0")
    store = _store(tmp_path)
    assert store.reserve_pr("acme_x", DAY, 1, repo="acme_x/m", key="k1", detail="t")
    assert _open(store, "acme/x", "kx") and not _open(store, "acme/y", "ky")
