"""Put a validated report on the child's model card: one pull request per repo, kept current.

The card that gets the section is the child's, or the fine-tune's (the third model) for a
three-model audit (`card_model`).

Text (PR title, body, update comment) lives in `bot/pr_text.py`. The Hub side
is `publish_report`: it refuses repos that opted out or closed the bot's PR, updates the
bot's own open PR when there is one (a no-op when it already carries this audit), and
otherwise opens a PR based on the branch head.

Freshness is the bot's job, not the Hub's: with `create_pr=True` a stale `parent_commit`
does not fail, the PR is simply created from that old commit (huggingface_hub's
`create_commit` docstring), which would undo every card edit made since. So the card is read
at the branch head, the section spliced into that text, and the head re-read right before
the commit; the PR is based on that head. When anything but README.md changed since the
audited revision (new weights), the audit is superseded instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub.errors import HfHubHTTPError

from depthcard.bot.hub import Hub
from depthcard.bot.pairs import OPT_OUT_KEY, opted_out_in_card
from depthcard.bot.pr_text import (
    DEFAULT_LINKS,
    PrLinks,
    Publisher,
    card_model,
    render_body,
    render_title,
    render_update_comment,
)
from depthcard.bot.state import audit_key
from depthcard.report.card import (
    CardParseError,
    parse_card_section,
    render_card_section,
    splice_section,
)
from depthcard.report.eval_results import EVAL_RESULTS_PATH, eval_results, eval_results_yaml
from depthcard.report.public_files import REPORT_FOLDER, model_report_url, public_files
from depthcard.report.reproduce import reproduce_command
from depthcard.schemas.errors import UserError
from depthcard.schemas.hub_events import repo_id_problem
from depthcard.schemas.report import AuditReport

log = logging.getLogger(__name__)

Action = Literal[
    "opened", "updated", "unchanged", "dry-run", "blocked", "capped", "conflict", "busy"
]
HEAD_TRIES = 3  # reads of the branch head before giving up on a card that keeps changing


@dataclass(frozen=True)
class PublishResult:
    """What publishing did."""

    action: Action
    pr_num: int | None = None
    detail: str = ""


def report_url(space_url: str, child_repo: str, child_sha: str) -> str:
    """The Space page of one audit in the results dataset, the leaderboard's link:
    `{space_url}?report={org}/{model}/{revision}`."""
    return f"{space_url}?report={child_repo}/{child_sha}"


def render_section(report: AuditReport, space_url: str) -> str:
    """The card section of a hub report, linking to the model's own report in the Space
    (`?model=`: read from the model repo, so it opens for the bot's PR and a maintainer's)."""
    url = model_report_url(space_url, card_model(report).repo_id)
    return render_card_section(report, report_url=url, reproduce_command=reproduce_command(report))


def load_report(folder: Path) -> AuditReport:
    """The validated report of a report folder.

    Raises:
        UserError: the folder is not a publishable report (the message says why).
        pydantic.ValidationError: report.json does not validate.
    """
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise UserError(f"{folder}: no report.json (is this a depthcard report folder?)")
    report = AuditReport.model_validate_json(path.read_text(encoding="utf-8"))
    if any(m.source != "hub" for m in (report.models.child, report.models.third) if m):
        raise UserError(
            f"{folder}: a model was audited from a local folder; publish needs an audit of "
            "the Hub repo at a pinned revision (depthcard audit BASE CHILD@sha)"
        )
    m = report.models
    for ref in (m.base, m.child, m.third):
        problem = repo_id_problem(ref.repo_id or "") if ref and ref.source == "hub" else None
        if problem is not None:  # a tampered report.json: its ids go into the card and the PR
            raise UserError(f"{folder}: a model is not a Hub repo id: {problem}")
    if m.base is None or m.base.source == "hub":
        third = m.third.revision if m.third else None
        base = m.base.revision if m.base else None
        key = audit_key(base, m.child.revision, report.tool.analysis_version, third)
        if report.audit_key != key:
            raise UserError(
                f"{folder}: the report's audit key {report.audit_key!r} does not match its "
                f"models and analysis version ({key!r})"
            )
    return report


def _is_bot_pr(pr, hub_user: str | None) -> bool:
    """Ours: opened by the bot's account. With no account known, none is ours: anyone can
    open a PR titled like ours, and it must never receive our commit or block us."""
    return hub_user is not None and pr.author == hub_user


def closed_bot_pr(hub: Hub, repo: str, hub_user: str | None) -> int | None:
    """The number of a bot PR the owner closed without merging, or None."""
    for pr in hub.bot_prs(repo, hub_user):
        if _is_bot_pr(pr, hub_user) and pr.status == "closed":
            return pr.num
    return None


def _readme(hub: Hub, repo: str, revision: str) -> str:
    return hub.read_text(repo, "README.md", revision) or ""


def card_metadata(text: str) -> dict:
    """The YAML metadata of a card, however it was saved (BOM, CRLF, a `...` end line).

    An opt-out fails closed: when the YAML cannot be read (a bad line elsewhere in it) or
    ModelCard does not find it, a `depthcard: VALUE` line of the front matter still counts.
    """
    from huggingface_hub import ModelCard

    # ModelCard finds no metadata after a byte-order mark; the owner's editor chose that.
    text = text.removeprefix("\ufeff")
    try:
        data = ModelCard(text, ignore_metadata_errors=True).data.to_dict()
    except Exception:  # a broken YAML header is the owner's business, not the bot's
        data = {}
    if OPT_OUT_KEY not in data and (line := _front_matter_value(text, OPT_OUT_KEY)):
        data[OPT_OUT_KEY] = line
    return data


def _front_matter_value(text: str, key: str) -> str | None:
    """The value of a top-level `key: value` line of the front matter, read without YAML."""
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].rstrip() != "---":
        return None
    for line in lines[1:]:
        if line.rstrip() in ("---", "..."):
            return None
        name, colon, value = line.partition(":")
        if colon and name.strip() == key and name == name.lstrip():
            return value.strip().strip("'\"")
    return None


@dataclass(frozen=True)
class Target:
    """Where and how to publish one report."""

    repo: str
    space_url: str
    hub_user: str | None
    dry_run: bool
    key: str | None = None
    links: PrLinks = DEFAULT_LINKS
    publisher: Publisher = "bot"  # a maintainer's `depthcard publish`: "maintainer"
    report_dir: Path | None = None  # set: its public files go into the PR under REPORT_FOLDER


def publish_report(
    hub: Hub,
    report: AuditReport,
    target: Target,
    *,
    record: Callable[[str, str, str], None],
    reserve_open: Callable[[str], bool] | None = None,
) -> PublishResult:
    """Open or update the bot's PR on `target.repo` with the report's card section.

    Args:
        record: called as record(action, phase, detail) around every Hub write.
        reserve_open: called as reserve_open(title) right before opening a PR; it records the
            intent (and takes a slot of the organisation's daily cap) and returns False, having
            recorded nothing, when the cap is reached. None: record the intent, no cap.

    Raises:
        ValueError: the report is not for `target.repo`.
        HfHubHTTPError / HubUnavailable: the Hub failed; nothing was recorded as published.
    """
    child = card_model(report)  # the fine-tune of a three-model audit
    if child.repo_id != target.repo:
        raise UserError(f"the report audits {child.repo_id}, not {target.repo}")
    for _ in range(HEAD_TRIES):
        head = hub.head(target.repo)
        if head != child.revision and _content_moved(hub, target.repo, child.revision, head):
            record("open-pr", "failed", "conflict: the weights changed since the audited revision")
            return PublishResult("conflict", detail=f"{target.repo} moved on to {head[:7]}")
        card = _readme(hub, target.repo, head)
        if opted_out_in_card(card_metadata(card)):
            return PublishResult("blocked", detail=f"card metadata has {OPT_OUT_KEY}: opt-out")
        readme = splice_section(card, render_section(report, target.space_url))
        if hub.head(target.repo) == head:  # nobody committed while we read and spliced
            break
    else:
        return PublishResult("busy", detail="the card kept changing; tried again next round")
    prs = [p for p in hub.bot_prs(target.repo, target.hub_user) if _is_bot_pr(p, target.hub_user)]
    closed = [p for p in prs if p.status == "closed"]
    if closed:
        return PublishResult("blocked", closed[0].num, f"PR #{closed[0].num} closed unmerged")
    title = render_title(report)
    open_prs = [p for p in prs if p.status in ("open", "draft")]
    if open_prs:
        return _update(hub, target, report, open_prs[0].num, readme, title, record)
    if target.dry_run:
        record("open-pr", "dry-run", title)
        return PublishResult("dry-run", detail=title)
    if reserve_open is None:
        record("open-pr", "intent", title)
    elif not reserve_open(title):
        return PublishResult("capped", detail="daily cap of new PRs for this organisation")
    extra = extra_files(report, target)
    body = render_body(report, _url(target, report), target.links, publisher=target.publisher,
                       added=tuple(extra))  # fmt: skip
    try:
        info = hub.open_pr(target.repo, readme=readme, parent_commit=head, title=title,
                           body=body, extra=extra)  # fmt: skip
    except HfHubHTTPError as exc:
        record("open-pr", "failed", str(exc).splitlines()[0])
        raise
    record("open-pr", "done", f"PR #{info.pr_num}")
    return PublishResult("opened", info.pr_num, info.pr_url or "")


def _content_moved(hub: Hub, repo: str, audited: str, head: str) -> bool:
    """True when a file other than README.md differs between the two revisions."""
    before, after = hub.file_ids(repo, audited), hub.file_ids(repo, head)
    before.pop("README.md", None)
    after.pop("README.md", None)
    return before != after


def extra_files(report: AuditReport, target: Target) -> dict[str, bytes]:
    """Files the PR adds beside README.md: the public part of the report folder under
    `depthcard/` (report.json, card.md, plots, withheld.json, by `report.public_files`'s
    allow-list: never the directions or the judged answers), so the report lives with the
    model; and `.eval_results/depthcard.yaml` when the config names the benchmark dataset and
    the report has a number to rank."""
    files: dict[str, bytes] = {}
    if target.report_dir is not None:
        for relative, data in public_files(target.report_dir).items():
            files[f"{REPORT_FOLDER}/{relative}"] = data
    if target.links.benchmark_repo is not None:
        entries = eval_results(report, target.links.benchmark_repo, _url(target, report))
        if entries:
            files[EVAL_RESULTS_PATH] = eval_results_yaml(entries).encode("utf-8")
    return files


def _url(target: Target, report: AuditReport) -> str:
    return model_report_url(target.space_url, card_model(report).repo_id)


def _update(hub, target, report, pr_num, readme, title, record) -> PublishResult:
    pr_head = hub.model_info(target.repo, revision=f"refs/pr/{pr_num}").sha
    current = _readme(hub, target.repo, pr_head)
    try:
        card = parse_card_section(current)
    except CardParseError:
        card = None
    extra = extra_files(report, target)
    same_files = all(
        hub.read_bytes(target.repo, path, pr_head) == data for path, data in extra.items()
    )
    if card is not None and card.audit_key == report.audit_key and current == readme:
        if same_files:
            return PublishResult("unchanged", pr_num, "the PR already carries this audit")
    if target.dry_run:
        record("update-pr", "dry-run", f"PR #{pr_num}: {title}")
        return PublishResult("dry-run", pr_num, title)
    record("update-pr", "intent", f"PR #{pr_num}")
    try:
        hub.update_pr(target.repo, pr_num, readme=readme, parent_commit=pr_head, title=title,
                      extra=extra)  # fmt: skip
    except HfHubHTTPError as exc:
        record("update-pr", "failed", str(exc).splitlines()[0])
        if getattr(exc.response, "status_code", None) in (409, 412):
            return PublishResult("conflict", pr_num, str(exc).splitlines()[0])
        raise
    record("update-pr", "done", f"PR #{pr_num}")
    if card is None or card.audit_key != report.audit_key:
        _comment(hub, target, pr_num, render_update_comment(card, report, _url(target, report)),
                 record)  # fmt: skip
    return PublishResult("updated", pr_num)


def _comment(hub: Hub, target: Target, pr_num: int, text: str, record) -> None:
    """Say on the PR what the update changed. A failed comment does not undo the update: the
    commit is there, and the comment is only its explanation."""
    record("comment", "intent", f"PR #{pr_num}")
    try:
        hub.comment(target.repo, pr_num, text)
    except HfHubHTTPError as exc:
        record("comment", "failed", str(exc).splitlines()[0])
        log.warning("PR #%d on %s updated, but its comment failed: %s", pr_num, target.repo, exc)
        return
    record("comment", "done", f"PR #{pr_num}")
