"""Find new children on the Hub and turn each into an audit row (queued, or skipped with why).

Polling reads `list_models(sort="created_at")` newest first, page by page, back to the stored
cursor however many models arrived since (the first poll, with no cursor, reads `poll_limit`),
with the filters the server can answer (`listing_filters`); webhook events and re-checks of
known children arrive through the state's inbox and the watched list. All three end in
`examine_child`, so every source feeds the same queue.

A repo's base comes from its card's `base_model`, else from the Hub's model tree (the
`base_model:{relation}:{id}` tags and `baseModels`, which the Hub also fills in for relations
it infers), else from the name rules (`pairs.name_rule_bases`).

A fine-tune of an instruct model (`base_model_relation: finetune`) becomes one three-model
audit: base = the instruct parent's base, child = the instruct parent, third = the fine-tune,
whose card gets the section.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from depthcard.bot.hub import Hub, UnreadableFile
from depthcard.bot.pairs import (
    RepoFacts,
    candidate_bases,
    declared_bases,
    facts_from_info,
    is_instruct_finetune,
    mismatch,
    opted_out_in_card,
    repo_reason,
)
from depthcard.bot.publish import closed_bot_pr
from depthcard.bot.state import AuditRow, StateStore, audit_key
from depthcard.report.card import CardParseError, parse_card_section
from depthcard.schemas.bot_config import BotConfig
from depthcard.schemas.json_text import loads_bounded

log = logging.getLogger(__name__)
CURSOR = "cursor:{scope}"
RELATIONS = ("finetune", "adapter", "quantized", "merge")


def listing_filters(cfg: BotConfig) -> dict:
    """`list_models` arguments that let the server drop what the bot would skip anyway: no
    safetensors, gated, another task, more than `parameter_budget` parameters (rounded up to
    whole billions, the `num_parameters` syntax of the docstring: "min:6B,max:128B")."""
    if not cfg.server_filters:
        return {}
    filters = {"filter": "safetensors", "gated": False,
               "num_parameters": f"max:{math.ceil(cfg.parameter_budget / 1e9)}B"}  # fmt: skip
    if cfg.pipeline_tag:
        filters["pipeline_tag"] = cfg.pipeline_tag
    return filters


def poll(hub: Hub, store: StateStore, cfg: BotConfig) -> list[str]:
    """Repos created since the stored cursor (per watched organisation, or the whole Hub).

    Pages back to the cursor, so none is missed when more than `poll_limit` arrived since the
    last poll; only the first poll (no cursor) stops at `poll_limit`. The cursor moves only
    after the new repos are in the inbox, so a crash re-reads them.
    """
    found: list[str] = []
    filters = listing_filters(cfg)
    for author in cfg.organizations or [None]:
        name = CURSOR.format(scope=author or "*")
        cursor = store.get_value(name)
        newest = cursor
        limit = cfg.poll_limit if cursor is None else None
        for info in hub.new_models(author=author, limit=limit, filters=filters):
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
    try:
        text = hub.read_text(facts.repo_id, "config.json", facts.sha)
        data = loads_bounded(text) if text is not None else None
    except ValueError:  # not UTF-8 (UnreadableFile), malformed, a huge integer, too deep
        return None  # unreadable counts as missing: the repo is skipped, with that reason
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
    facts = with_hub_lineage(facts_from_info(info), info)
    if facts.private or facts.gated:
        return facts  # never read files of a gated/private repo: the skip reason is enough
    return dataclasses.replace(facts, config=read_config(hub, facts))


def hub_lineage(info) -> tuple[list[str], str | None]:
    """(bases, relation) from the Hub's model tree: `baseModels` of model_info, else the
    `base_model:{relation}:{id}` tags (also in listings). huggingface_hub keeps `baseModels`
    raw and does not document its shape; both a list of ids and {"relation", "models": [{"id"}]}
    are read."""
    tree = getattr(info, "base_models", None)
    bases: list[str] = []
    relation = None
    if isinstance(tree, dict):
        relation = tree.get("relation") if isinstance(tree.get("relation"), str) else None
        tree = tree.get("models")
    for entry in tree if isinstance(tree, list) else []:
        base = entry.get("id") if isinstance(entry, dict) else entry
        if isinstance(base, str):
            bases.append(base)
    for tag in getattr(info, "tags", None) or []:
        kind, _, rest = tag.removeprefix("base_model:").partition(":")
        if tag.startswith("base_model:") and kind in RELATIONS and rest:
            relation = relation or kind
            bases += [rest] if rest not in bases else []
    return bases, relation


def with_hub_lineage(facts: RepoFacts, info) -> RepoFacts:
    """`facts` with the Hub's model tree filling what the card does not say: `base_model`
    and `base_model_relation` (the card's own values win)."""
    bases, relation = hub_lineage(info)
    card = dict(facts.card)
    if bases and not card.get("base_model"):
        card["base_model"] = bases
    if relation and not card.get("base_model_relation"):
        card["base_model_relation"] = relation
    return dataclasses.replace(facts, card=card) if card != facts.card else facts


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


@dataclass(frozen=True)
class Models:
    """The models of one audit: base and child, plus the fine-tune of a three-model audit."""

    base: RepoFacts
    child: RepoFacts
    third: RepoFacts | None = None

    @property
    def target(self) -> RepoFacts:
        """The repo whose card gets the section (the fine-tune when there is one)."""
        return self.third or self.child

    def key(self, analysis_version: str) -> str:
        """The audit key, equal to the one the report carries."""
        third = self.third.sha if self.third else None
        return audit_key(self.base.sha, self.child.sha, analysis_version, third)


def pair_models(hub: Hub, child: RepoFacts) -> tuple[Models | None, str | None]:
    """The audit of a new repo: a pair, a three-model audit for a fine-tune of an instruct
    model, or (None, reason) — (None, None) when the repo is not a child by any rule."""
    parent, reason = find_base(hub, child)
    if parent is None:
        return None, reason
    if not is_instruct_finetune(child, parent):
        return Models(parent, child), None
    base, reason = find_base(hub, parent)
    if base is None:
        why = f"({reason})" if reason else "(no base by any rule)"
        return None, f"fine-tune of instruct model {parent.repo_id}, whose base is unknown {why}"
    return Models(base, parent, child), None


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
    models, reason = pair_models(hub, child)
    if models is None:
        if reason is None:
            return None
        store.add(base_repo=None, base_sha=None, child_repo=repo_id, child_sha=child.sha,
                  analysis_version=analysis_version, state="skipped", reason=reason)  # fmt: skip
        return audit_key(None, child.sha, analysis_version)
    key = models.key(analysis_version)
    store.watch(repo_id, _parent_id(models))
    third = models.third
    store.add(base_repo=models.base.repo_id, base_sha=models.base.sha,
              child_repo=models.child.repo_id, child_sha=models.child.sha,
              third_repo=third.repo_id if third else None, third_sha=third.sha if third else None,
              analysis_version=analysis_version, state="discovered",
              parameters=models.target.parameters)  # fmt: skip
    row = store.get(key)
    if row is not None and row.state == "discovered":
        check(hub, store, cfg, key, models)
    return key


def _parent_id(models: Models) -> str:
    """The repo the examined one declares (or is named) as its parent."""
    return models.child.repo_id if models.third else models.base.repo_id


def _reason(cfg: BotConfig, m: Models) -> str | None:
    """The first reason to skip these models: a repo rule, then configs that differ."""
    budget = cfg.parameter_budget
    reasons = [repo_reason(m.target, budget=budget, licences=cfg.licence_allow_list)]
    reasons += [repo_reason(f, budget=budget) for f in (m.child, m.base) if f is not m.target]
    pairs = [(m.base, m.child)] + ([(m.child, m.third)] if m.third else [])
    reasons += [a.config and b.config and mismatch(a.config, b.config) for a, b in pairs]
    return next((r for r in reasons if r), None)


def check(hub: Hub, store: StateStore, cfg: BotConfig, key: str, models: Models) -> None:
    """discovered → queued, or → skipped with the first reason found."""
    target = models.target
    reason = _reason(cfg, models)
    try:
        if reason is None and _card_has_key(hub, target, key):
            reason = "already audited: the card carries a depthcard section for this key"
    except UnreadableFile as exc:
        reason = f"card unreadable: {exc}"
    blocked = store.blocked(target.repo_id)
    if reason is None and blocked is None:
        num = closed_bot_pr(hub, target.repo_id, cfg.hub_user)
        if num is not None:
            blocked = f"PR #{num} closed unmerged"
            store.block(target.repo_id, blocked)
    if reason is None and blocked is not None:
        store.transition(key, ("discovered",), "opted_out", reason=blocked)
    elif reason:
        store.transition(key, ("discovered",), "skipped", reason=reason)
    else:
        store.transition(key, ("discovered",), "queued")


def resume_discovered(hub: Hub, store: StateStore, cfg: BotConfig) -> None:
    """Re-check rows a crash left in `discovered` (at their recorded revisions)."""
    for row in store.rows("discovered"):
        resume_row(hub, store, cfg, row)


def resume_row(hub: Hub, store: StateStore, cfg: BotConfig, row: AuditRow) -> None:
    """Re-check one row a crash left in `discovered`, at its recorded revisions."""
    base = repo_facts(hub, row.base_repo, row.base_sha) if row.base_repo else None
    child = repo_facts(hub, row.child_repo, row.child_sha)
    third = repo_facts(hub, row.third_repo, row.third_sha) if row.third_repo else None
    if base is None or child is None or (row.third_repo and third is None):
        store.transition(row.key, ("discovered",), "skipped", reason="repo no longer found")
        return
    check(hub, store, cfg, row.key, Models(base, child, third))
