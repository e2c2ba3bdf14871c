"""Find new children on the Hub and turn each into an audit row (queued, or skipped with why).

Polling reads `list_models(sort="created_at")` newest first and stops at the stored cursor;
webhook events and re-checks of known children arrive through the state's inbox and the
watched list. All three end in `examine_child`, so every source feeds the same queue.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from bot.card import CardParseError, parse_card_section
from bot.hub import Hub
from bot.pairs import (
    RepoFacts,
    candidate_bases,
    declared_bases,
    facts_from_info,
    mismatch,
    opted_out_in_card,
    repo_reason,
)
from bot.publish import closed_bot_pr
from bot.state import StateStore, audit_key
from schemas.bot_config import BotConfig

log = logging.getLogger(__name__)
CURSOR = "cursor:{scope}"


def poll(hub: Hub, store: StateStore, cfg: BotConfig) -> list[str]:
    """Repos created since the stored cursor (per watched organisation, or the whole Hub).

    The cursor moves only after the new repos are in the inbox, so a crash re-reads them.
    """
    found: list[str] = []
    for author in cfg.organizations or [None]:
        name = CURSOR.format(scope=author or "*")
        cursor = store.get_value(name)
        newest = cursor
        for info in hub.new_models(author=author, limit=cfg.poll_limit):
            created = info.created_at.isoformat() if info.created_at else None
            if created is None or (cursor is not None and created <= cursor):
                break  # newest first: everything after this was seen by an earlier poll
            found.append(info.id)
            store.push_inbox(info.id, "poll")
            if newest is None or created > newest:
                newest = created
        if newest is not None and newest != cursor:
            store.set_value(name, newest)
    log.info("poll: %d new repo(s)", len(found))
    return found


def read_config(hub: Hub, facts: RepoFacts) -> dict | None:
    """The parsed config.json of a repo at its pinned sha, or None."""
    if "config.json" not in facts.files:
        return None
    text = hub.read_text(facts.repo_id, "config.json", facts.sha)
    try:
        data = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def repo_facts(hub: Hub, repo_id: str, revision: str | None = None) -> RepoFacts | None:
    """Facts about a repo, or None when it does not exist (or is not visible to us)."""
    try:
        info = hub.model_info(repo_id, revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) in (401, 403, 404):
            return None
        raise
    facts = facts_from_info(info)
    if facts.private or facts.gated:
        return facts  # never read files of a gated/private repo: the skip reason is enough
    return facts_from_info(info, read_config(hub, facts))


def find_base(hub: Hub, child: RepoFacts) -> tuple[RepoFacts | None, str | None]:
    """The first candidate base that exists; (None, reason) when none does or may."""
    candidates, reason = candidate_bases(child)
    if reason:
        return None, reason
    for repo_id in candidates:
        base = repo_facts(hub, repo_id)
        if base is not None:
            return base, None
    if declared_bases(child)[0]:
        return None, f"declared base not found on the Hub: {', '.join(candidates)}"
    return None, None  # not a child by any rule: nothing to record


def _card_has_key(hub: Hub, child: RepoFacts, key: str) -> bool:
    if "README.md" not in child.files:
        return False
    text = hub.read_text(child.repo_id, "README.md", child.sha)
    try:
        card = parse_card_section(text or "")
    except CardParseError:
        return False
    return card is not None and card.audit_key == key


def examine_child(
    hub: Hub, store: StateStore, cfg: BotConfig, repo_id: str, analysis_version: str
) -> str | None:
    """Pair a repo with its base and record the audit row; returns the key, None if no pair."""
    child = repo_facts(hub, repo_id)
    if child is None:
        log.info("%s: not found or not visible; ignored", repo_id)
        return None
    if cfg.opted_out(repo_id) or opted_out_in_card(child.card):
        where = "config opt_out list" if cfg.opted_out(repo_id) else "card metadata"
        store.block(repo_id, f"opted out ({where})")
        key = audit_key(None, child.sha, analysis_version)
        store.add(base_repo=None, base_sha=None, child_repo=repo_id, child_sha=child.sha,
                  analysis_version=analysis_version, state="opted_out",
                  reason=f"opted out ({where})")  # fmt: skip
        return key
    base, reason = find_base(hub, child)
    if base is None:
        if reason is None:
            return None
        store.add(base_repo=None, base_sha=None, child_repo=repo_id, child_sha=child.sha,
                  analysis_version=analysis_version, state="skipped", reason=reason)  # fmt: skip
        return audit_key(None, child.sha, analysis_version)
    key = audit_key(base.sha, child.sha, analysis_version)
    store.watch(repo_id, base.repo_id)
    store.add(base_repo=base.repo_id, base_sha=base.sha, child_repo=repo_id, child_sha=child.sha,
              analysis_version=analysis_version, state="discovered",
              parameters=child.parameters)  # fmt: skip
    row = store.get(key)
    if row is not None and row.state == "discovered":
        check(hub, store, cfg, key, base, child)
    return key


def check(
    hub: Hub, store: StateStore, cfg: BotConfig, key: str, base: RepoFacts, child: RepoFacts
) -> None:
    """discovered → queued, or → skipped with the first reason found."""
    budget = cfg.parameter_budget
    licences = cfg.licence_allow_list
    reason = (
        repo_reason(child, budget=budget, licences=licences)
        or repo_reason(base, budget=budget)
        or (base.config and child.config and mismatch(base.config, child.config))
        or None
    )
    if reason is None and _card_has_key(hub, child, key):
        reason = "already audited: the card carries a depthcard section for this key"
    blocked = store.blocked(child.repo_id)
    if reason is None and blocked is None:
        num = closed_bot_pr(hub, child.repo_id, cfg.hub_user)
        if num is not None:
            blocked = f"PR #{num} closed unmerged"
            store.block(child.repo_id, blocked)
    if reason is None and blocked is not None:
        store.transition(key, ("discovered",), "opted_out", reason=blocked)
    elif reason:
        store.transition(key, ("discovered",), "skipped", reason=reason)
    else:
        store.transition(key, ("discovered",), "queued")


def resume_discovered(hub: Hub, store: StateStore, cfg: BotConfig) -> None:
    """Re-check rows a crash left in `discovered` (at their recorded revisions)."""
    for row in store.rows("discovered"):
        base = repo_facts(hub, row.base_repo, row.base_sha) if row.base_repo else None
        child = repo_facts(hub, row.child_repo, row.child_sha)
        if base is None or child is None:
            store.transition(row.key, ("discovered",), "skipped", reason="repo no longer found")
            continue
        check(hub, store, cfg, row.key, base, child)


def parse_created(value: str) -> datetime:
    """An ISO timestamp as the Hub writes it (for tests and the cursor)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
