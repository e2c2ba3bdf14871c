"""One round of the bot: discover → pair → queue → dispatch → collect → publish.

Every step reads its work from the state file and leaves it there, so a round that dies at
any point (crash, kill -9, Hub outage) is resumed by the next round without losing an audit
or repeating a Hub write.

One rule for errors: an exception raised while handling one repository is recorded against
that repository (its row's reason or error, shown by `depthcard status`) and the round goes
on. Only failures of the Hub itself (timeouts, 5xx, 429, refused connections: `kept`) leave
the repo as it was for the next round; a repo, revision or file the Hub says is gone is the
repo's problem and is recorded like any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from pydantic import ValidationError

from depthcard.bot import discover
from depthcard.bot.dispatch import AuditJob, Backend, Outcome
from depthcard.bot.hub import Hub, HubUnavailable, UnreadableFile
from depthcard.bot.publish import PrLinks, Target, load_report, publish_report
from depthcard.bot.state import AuditRow, StateStore
from depthcard.report.card import CardParseError
from depthcard.schemas.bot_config import BotConfig
from depthcard.schemas.errors import UserError
from depthcard.schemas.hub_events import repo_id_problem

log = logging.getLogger(__name__)
HUB_ERRORS = (HfHubHTTPError, HubUnavailable, OSError)
# The Hub answered that the repo, revision or file is not there: the repo's problem, not the
# Hub's (a squashed history removes the audited revision for good).
GONE = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)
# A repo whose files the bot cannot read or splice: "card unreadable" rather than an error.
REPO_ERRORS = (UnreadableFile, CardParseError, UnicodeError, RecursionError)
REASON_CHARS = 500
INVALID_ID = "not a Hub repo id: {problem}"
ERROR_REASON = "{what}: {kind}: {message}"


def kept(exc: BaseException) -> bool:
    """True for a failure of the Hub (or the network, or this machine's disk), which leaves
    the repo as it was for the next round; False for one recorded against the repo."""
    return isinstance(exc, HUB_ERRORS) and not isinstance(exc, GONE)


def error_reason(what: str, exc: BaseException) -> str:
    """The reason recorded against a repo for `exc` (one line, at most REASON_CHARS)."""
    message = " ".join(str(exc).split())
    if not isinstance(exc, REPO_ERRORS + GONE):
        log.error("%s: %s", what, type(exc).__name__, exc_info=exc)  # a bug keeps its traceback
    reason = ERROR_REASON.format(what=what, kind=type(exc).__name__, message=message)
    return reason[:REASON_CHARS]


@dataclass
class Round:
    """The context of a round: what it talks to and what it knows."""

    hub: Hub
    store: StateStore
    cfg: BotConfig
    backend: Backend
    analysis_version: str
    clock: Callable[[], float] = time.time


def run_round(r: Round) -> dict[str, int]:
    """One full round; returns the number of audits per state afterwards."""
    _discover(r)
    _requeue_failed(r)
    _dispatch(r)
    _publish(r)
    return r.store.counts()


def _discover(r: Round) -> None:
    try:
        discover.poll(r.hub, r.store, r.cfg)
    except Exception as exc:  # a listing is no repo's: the cursor stays, a bug shows its trace
        log.warning("poll failed, the cursor stays where it was: %s", exc, exc_info=not kept(exc))
    for child, _base in r.store.watched(r.cfg.recheck_limit):
        r.store.push_inbox(child, "recheck")
    for repo in r.store.inbox():
        _examine(r, repo)
    for row in r.store.rows("discovered"):
        try:
            discover.resume_row(r.hub, r.store, r.cfg, row)
        except Exception as exc:  # the rule: record it against the repo
            if kept(exc):
                log.warning("re-check of %s failed, kept for the next round: %s", row.key, exc)
                continue
            reason = error_reason("cannot re-check the repo", exc)
            r.store.transition(row.key, ("discovered",), "skipped", reason=reason)


def _examine(r: Round, repo: str) -> None:
    """Examine one inbox repo; it leaves the inbox unless the Hub failed."""
    problem = repo_id_problem(repo)
    if problem is not None:
        _record_unresolved(r, repo, INVALID_ID.format(problem=problem))
        r.store.pop_inbox(repo)
        return
    try:
        discover.examine_child(r.hub, r.store, r.cfg, repo, r.analysis_version)
    except Exception as exc:  # the rule: record it against the repo
        if kept(exc):
            log.warning("%s: could not examine it, kept for the next round: %s", repo, exc)
            return
        what = "cannot read the repo" if isinstance(exc, REPO_ERRORS) else "cannot examine the repo"
        if not _skip_repo(r, repo, error_reason(what, exc)):
            return
    r.store.pop_inbox(repo)


def _skip_repo(r: Round, repo: str, reason: str) -> bool:
    """Record `repo` as skipped at its head with `reason`; False when the Hub failed."""
    log.warning("%s: skipped: %s", repo, reason)
    discovered = [row for row in r.store.for_child(repo) if row.state == "discovered"]
    for row in discovered:
        r.store.transition(row.key, ("discovered",), "skipped", reason=reason)
    if discovered:
        return True
    try:
        head = r.hub.head(repo)
    except Exception as exc:  # no head to record it at: record it without one
        if kept(exc):
            log.warning("%s: could not record the skip, kept for the next round: %s", repo, exc)
            return False
        _record_unresolved(r, repo, reason)
        return True
    r.store.add(base_repo=None, base_sha=None, child_repo=repo, child_sha=head,
                analysis_version=r.analysis_version, state="skipped", reason=reason)  # fmt: skip
    return True


def _record_unresolved(r: Round, repo: str, reason: str) -> None:
    """Record a skip for a repo with no revision to pin (a bad id, a repo that is gone): its
    child sha is `unresolved:{repo}`, so each such repo keeps a row of its own."""
    log.warning("%s: skipped: %s", repo, reason)
    r.store.add(base_repo=None, base_sha=None, child_repo=repo, child_sha=f"unresolved:{repo}",
                analysis_version=r.analysis_version, state="skipped", reason=reason)  # fmt: skip


def _requeue_failed(r: Round) -> None:
    """Failed audits with attempts left go back in the queue once their backoff has passed."""
    for row in r.store.claimable("failed"):
        if row.attempts < r.cfg.max_attempts:
            r.store.transition(row.key, ("failed",), "queued")


def _job(row: AuditRow) -> AuditJob:
    return AuditJob(row.key, row.base_repo, row.base_sha, row.child_repo, row.child_sha,
                    row.parameters, row.third_repo, row.third_sha)  # fmt: skip


def _dispatch(r: Round) -> None:
    started = 0
    for row in r.store.claimable("running"):  # resume: a crash or an hf-job still running
        if r.store.claim(row.key, "running", r.cfg.lease_seconds):
            _run(r, row)
    for row in r.store.claimable("queued"):
        if started >= r.cfg.max_parallel:
            break
        if r.store.transition(row.key, ("queued",), "running", lease=r.cfg.lease_seconds):
            started += 1
            _run(r, r.store.get(row.key))


def _run(r: Round, row: AuditRow) -> None:
    job = _job(row)
    try:
        handle = row.job_id or r.backend.start(job)
        if handle != row.job_id:
            r.store.set_fields(row.key, job_id=handle)
        outcome = r.backend.poll(job, handle)
    except UserError as exc:  # the bot's config cannot run this audit: no retry helps
        outcome = Outcome(None, error_reason("dispatch failed", exc), retry=False)
    except Exception as exc:  # the rule: record it against the audit
        outcome = Outcome(None, error_reason("dispatch failed", exc))
    if outcome is None:
        r.store.release(row.key)  # still running on the backend: poll again next round
        return
    if outcome.report_dir is not None:
        r.store.transition(row.key, ("running",), "succeeded", report_dir=str(outcome.report_dir))
        return
    attempts = row.attempts + 1
    if not outcome.retry:  # the audit refused its input: another run would too
        attempts = max(attempts, r.cfg.max_attempts)
        log.warning("audit %s failed, not retried: %s", row.key, outcome.error)
    else:
        log.warning("audit %s failed (attempt %d): %s", row.key, attempts, outcome.error)
    wait = r.cfg.retry_base_seconds * 2 ** (attempts - 1)
    r.store.transition(row.key, ("running",), "failed", attempts=attempts, error=outcome.error,
                       job_id=None, not_before=r.clock() + wait)  # fmt: skip


def poll_running(r: Round) -> int:
    """Poll once every audit running on the backend under a job handle (HF Jobs between
    rounds): a finished one is collected now, not at the next round. Returns how many run."""
    for row in r.store.claimable("running"):
        if row.job_id and r.store.claim(row.key, "running", r.cfg.lease_seconds):
            _run(r, r.store.get(row.key))
    return sum(1 for row in r.store.rows("running") if row.job_id)


def wait_for_next_round(r: Round, sleep: Callable[[float], None]) -> None:
    """Sleep `interval_seconds`; with the hf-jobs backend and jobs running, poll them every
    `jobs.poll_seconds` meanwhile (`poll_running`)."""
    left = r.cfg.interval_seconds
    step = r.cfg.jobs.poll_seconds if r.cfg.backend == "hf-jobs" and r.cfg.jobs else left
    while left > 0:
        if step >= left or not any(row.job_id for row in r.store.rows("running")):
            sleep(left)
            return
        sleep(step)
        left -= step
        try:
            poll_running(r)
        except HUB_ERRORS as exc:
            log.warning("polling running jobs failed, next try in %.0fs: %s", step, exc)


def _day_start(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def _publish(r: Round) -> None:
    for row in r.store.claimable("succeeded"):
        if not r.store.claim(row.key, "succeeded", r.cfg.lease_seconds):
            continue
        try:
            publish_row(r, row)
        except Exception as exc:  # the rule: record it against the repo
            if kept(exc):
                log.warning("publishing %s failed, kept for the next round: %s", row.key, exc)
                r.store.release(row.key)
                continue
            what = "card unreadable" if isinstance(exc, REPO_ERRORS) else "cannot publish"
            reason = error_reason(what, exc)
            log.warning("publishing %s: skipped: %s", row.key, reason)
            r.store.transition(row.key, ("succeeded",), "skipped", reason=reason)


def publish_row(r: Round, row: AuditRow) -> None:
    """Publish one succeeded audit and move its row to where the result says."""
    repo, store = row.target_repo, r.store  # the fine-tune's card for a three-model audit
    reason = store.blocked(repo) or ("opted out (config)" if r.cfg.opted_out(repo) else None)
    if reason:
        store.transition(row.key, ("succeeded",), "opted_out", reason=reason)
        return
    try:
        report = load_report(Path(row.report_dir))
        if report.audit_key != row.key:
            raise ValueError(f"the report is for audit {report.audit_key}, not {row.key}")
    except (ValueError, ValidationError) as exc:
        store.transition(row.key, ("succeeded",), "failed", attempts=r.cfg.max_attempts,
                         error=f"report rejected: {str(exc)[:500]}")  # fmt: skip
        return
    org = repo.split("/", 1)[0]
    links = PrLinks.from_config(r.cfg)
    target = Target(repo, r.cfg.space_url, r.cfg.hub_user, r.cfg.dry_run, row.key, links,
                    report_dir=Path(row.report_dir))  # fmt: skip
    result = publish_report(
        r.hub,
        report,
        target,
        record=lambda action, phase, detail: store.log_write(repo, action, phase, row.key, detail),
        reserve_open=lambda title: store.reserve_pr(
            org,
            _day_start(r.clock()),
            r.cfg.cap_per_org_per_day,
            repo=repo,
            key=row.key,
            detail=title,
        ),
    )
    log.info("publish %s: %s %s", row.key, result.action, result.detail)
    if result.action in ("opened", "updated", "unchanged"):
        store.transition(row.key, ("succeeded",), "published", pr_num=result.pr_num)
    elif result.action == "blocked":
        store.block(repo, result.detail)
        store.transition(row.key, ("succeeded",), "opted_out", reason=result.detail)
    elif result.action == "conflict" and result.pr_num is None:
        superseded = "superseded: the repo moved on from the audited revision"
        store.transition(row.key, ("succeeded",), "skipped", reason=superseded)
    else:  # dry-run, capped, a PR branch that moved: try again next round
        store.release(row.key)


def watch(
    r: Round, *, once: bool, sleep: Callable[[float], None] = time.sleep, rounds: int | None = None
) -> dict[str, int]:
    """Run rounds until interrupted (or one, with `once`); returns the last round's counts."""
    done = 0
    while True:
        counts = run_round(r)
        done += 1
        log.info("round %d: %s", done, counts)
        if once or (rounds is not None and done >= rounds):
            return counts
        wait_for_next_round(r, sleep)
