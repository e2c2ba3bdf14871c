"""A model's own report, read from its repo: what a card's `?model=org/name` link opens.

`depthcard publish` (the bot's and a maintainer's alike) adds the public report folder under
`depthcard/` of the model repo in the pull request's one commit. So the link finds the report
wherever the model's owner left it: `depthcard/report.json` at main once the PR is merged,
else the copy in the newest open pull request that carries one, else the newest report of
that model in the Space's own store (the bot's results dataset). Whatever the page shows
about where the report came from is escaped: the model id comes from the visitor and the PR
author from the Hub.

A report read from a repo must describe that repo's model (the card model of
`bot.pr_text.card_model`: the fine-tune of a three-model audit), so a PR anyone can open
cannot show its report under another model's name; and the page says when the report is
only in an open, unmerged pull request and who opened it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from pydantic import ValidationError

from depthcard.report.markdown import md_code
from depthcard.report.public_files import REPORT_FOLDER
from depthcard.schemas.hub_events import repo_id_problem
from depthcard.schemas.report import AuditReport
from depthcard.space.store import MAX_REPORT_BYTES, REPORT_FILE, ReportEntry, ReportStore
from depthcard.space.store import report_id as id_of_report

log = logging.getLogger(__name__)

REPORT_PATH = f"{REPORT_FOLDER}/{REPORT_FILE}"
MAX_PRS = 10  # open pull requests tried, newest first
CACHE_SECONDS = 300.0  # a model's answer is reused this long, so reloads cost the Hub nothing
CACHE_ENTRIES = 512
SHOWN_CHARS = 120  # of a model id echoed back

FROM_MAIN = "Read from {path} of {model} at main (commit {sha})."
FROM_PR = (
    "Read from {path} in **open pull request #{num}** of {model}, opened by {author}: "
    "not merged, so the model's owner has not accepted it."
)
FROM_STORE = (
    "Read from this Space's results: {model} has no {path} at main or in an open pull request."
)
NO_MODEL = "No model {model} on the Hub that this Space can read (it may be private or gated)."
NO_REPORT = (
    "{model} has no {path} at main or in an open pull request, and this Space has no report of it."
)
BAD_ID = "{model} is not a Hub model id: {problem}"
UNREACHABLE = "The Hub could not be reached to read {model}'s report; try again in a minute."
INVALID = "The {path} of {model} at {where} is not a valid depthcard report: {reason}"
OTHER_MODEL = "The {path} of {model} at {where} describes another model, {other}; not shown."
TOO_BIG = "The {path} of {model} at {where} is {size} bytes, over the {limit} byte limit."


@dataclass(frozen=True)
class ModelReport:
    """What `?model=` found: the report and where it came from, or why there is none.

    `note` is Markdown, every outside value in it escaped.
    """

    entry: ReportEntry | None
    note: str


class _Refused(Exception):
    """A report file exists but cannot be shown; its message is the note."""


def _shown(model: str) -> str:
    cut = "…" if len(model) > SHOWN_CHARS else ""
    return md_code(model[:SHOWN_CHARS] + cut)


def _card_repo(report: AuditReport) -> str | None:
    model = report.models.third or report.models.child
    return model.repo_id if model.source == "hub" else None


def _read(api: HfApi, model: str, revision: str, where: str) -> tuple[ReportEntry, str] | None:
    """(validated report, commit sha) at `revision`; None when the repo has no report there.

    Raises:
        _Refused: the file is too large, invalid, or about another model.
        RepositoryNotFoundError, HfHubHTTPError, httpx2.HTTPError: from the Hub.
    """
    fields = {"path": md_code(REPORT_PATH), "model": _shown(model), "where": where}
    url = hf_hub_url(model, REPORT_PATH, revision=revision, endpoint=api.endpoint)
    try:
        meta = api.get_hf_file_metadata(url=url)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    if meta.size is not None and meta.size > MAX_REPORT_BYTES:
        raise _Refused(TOO_BIG.format(size=meta.size, limit=MAX_REPORT_BYTES, **fields))
    sha = meta.commit_hash or revision
    path = Path(api.hf_hub_download(model, REPORT_PATH, revision=sha))
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise _Refused(TOO_BIG.format(size=path.stat().st_size, limit=MAX_REPORT_BYTES, **fields))
    try:
        report = AuditReport.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        reason = md_code(str(exc).splitlines()[0])
        raise _Refused(INVALID.format(reason=reason, **fields)) from None
    other = _card_repo(report)
    if other is None or other.lower() != model.lower():
        raise _Refused(OTHER_MODEL.format(other=_shown(str(other or "a local folder")), **fields))
    return ReportEntry(id=id_of_report(report), report=report, source=path), sha


def read_model_report(model: str, api: HfApi, store: ReportStore | None = None) -> ModelReport:
    """The report `?model=org/name` opens: main, then open pull requests, then the store.

    Args:
        model: the visitor's `org/name`, checked before any request.
        api: the Hub client (its endpoint and token).
        store: the Space's own reports, the last place looked.

    Returns:
        The entry and a note saying where it came from, or no entry and why.
    """
    model = model.strip().strip("/")
    problem = repo_id_problem(model)
    if problem is not None:
        return ModelReport(None, BAD_ID.format(model=_shown(model), problem=md_code(problem)))
    fields = {"path": md_code(REPORT_PATH), "model": _shown(model)}
    try:
        found = _read(api, model, "main", "main")
        if found is not None:
            entry, sha = found
            return ModelReport(entry, FROM_MAIN.format(sha=md_code(sha[:12]), **fields))
        prs = api.get_repo_discussions(
            model, discussion_type="pull_request", discussion_status="open"
        )
        for tried, pr in enumerate(prs):
            if tried == MAX_PRS:
                break
            found = _read(api, model, pr.git_reference, f"pull request #{pr.num}")
            if found is not None:
                note = FROM_PR.format(num=pr.num, author=md_code(pr.author), **fields)
                return ModelReport(found[0], note)
    except _Refused as exc:
        return ModelReport(None, str(exc))
    except RepositoryNotFoundError:
        return ModelReport(None, NO_MODEL.format(model=_shown(model)))
    except (HfHubHTTPError, httpx2.HTTPError, OSError):
        log.warning("reading %s's report from the Hub failed", model, exc_info=True)
        return ModelReport(None, UNREACHABLE.format(model=_shown(model)))
    stored = [e for e in (store.entries.values() if store else ()) if _matches(e, model)]
    if stored:
        newest = max(stored, key=lambda e: e.report.created_at)
        return ModelReport(newest, FROM_STORE.format(**fields))
    return ModelReport(None, NO_REPORT.format(**fields))


def _matches(entry: ReportEntry, model: str) -> bool:
    repo = _card_repo(entry.report)
    return repo is not None and repo.lower() == model.lower()


class ModelReports:
    """`read_model_report` with a short memory: one Hub read per model per `CACHE_SECONDS`,
    however often a page is reloaded; entries found are kept so the report's other views
    (samples, compare) find them by id."""

    def __init__(self, api: HfApi, store: ReportStore, max_age: float = CACHE_SECONDS):
        self.api, self.store, self.max_age = api, store, max_age
        self._seen: dict[str, tuple[float, ModelReport]] = {}
        self._lock = threading.Lock()

    def read(self, model: str) -> ModelReport:
        """The report of `model`, read again when the remembered answer is older than max_age."""
        key = model.strip().strip("/").lower()
        with self._lock:
            hit = self._seen.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.max_age:
            return hit[1]
        found = read_model_report(model, self.api, self.store)
        with self._lock:
            if len(self._seen) >= CACHE_ENTRIES:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = (time.monotonic(), found)
            if found.entry is not None:
                self.store.linked[found.entry.id] = found.entry
        return found
