"""The bot's subcommands: `watch`, `serve`, `status`, `publish`, `retry`.

Configuration and secrets are read here, once, and handed down; nothing below reads the
environment. Output for people is printed here; the library modules only log.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
from pathlib import Path

from depthcard.cli.errors import reading_user_file
from depthcard.schemas.errors import UserError

log = logging.getLogger(__name__)


def add_parsers(sub) -> None:
    """Register the bot's subcommands on the `depthcard` parser."""
    watch = sub.add_parser("watch", help="find new pairs on the Hub, audit them, open PRs")
    _config_arg(watch)
    watch.add_argument("--once", action="store_true", help="run one round and exit")
    watch.add_argument("--repo", action="append", default=[], help="also examine this child repo")
    watch.add_argument("--publish", action="store_true", help="open PRs (override dry_run)")
    watch.set_defaults(handler=run_watch)

    serve = sub.add_parser("serve", help="receive Hub webhooks (secret: DEPTHCARD_WEBHOOK_SECRET)")
    _config_arg(serve)
    serve.set_defaults(handler=run_serve)

    status = sub.add_parser("status", help="table of audits by state, with reasons")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="one JSON document (BotStatus)")
    status.set_defaults(handler=run_status)

    publish = sub.add_parser("publish", help="open (or update) the PR for a report you ran")
    publish.add_argument("report_dir", type=Path, help="report folder of `depthcard audit`")
    publish.add_argument("--repo", required=True, help="the child model repo (org/name)")
    publish.add_argument("--dry-run", action="store_true", help="show the PR, open nothing")
    publish.add_argument(
        "--upload-report",
        action="store_true",
        help="also upload the report folder (and the rebuilt leaderboard.jsonl) to the config's "
        "results_repo, so the card's link to the Space resolves",
    )
    _config_arg(publish)
    publish.set_defaults(handler=run_publish)

    public = sub.add_parser(
        "public-report",
        help="copy the publishable files of a report folder (no directions, no ablated answers; "
        "their sha256 in withheld.json)",
    )
    public.add_argument("report_dir", type=Path, help="report folder of `depthcard audit`")
    public.add_argument("--out", type=Path, required=True, help="new folder for the copy")
    public.set_defaults(handler=run_public_report)

    retry = sub.add_parser("retry", help="queue a failed or skipped audit again")
    retry.add_argument("key", help="audit key: base sha/child sha/analysis version")
    _config_arg(retry)
    retry.set_defaults(handler=run_retry)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="bot config YAML (default: built-in)")


def _config(args):
    from depthcard.schemas.bot_config import load_bot_config

    with reading_user_file():
        return load_bot_config(args.config)


def _hub(cfg, token: str | None):
    from depthcard.bot.hub import Hub

    return Hub(
        token,
        endpoint=os.environ.get("HF_ENDPOINT"),
        retries=cfg.hub_retries,
        timeout=cfg.http_timeout_seconds,
        cache_dir=Path(cfg.work_dir) / "hub-cache",
    )


def _bot_user(cfg, hub, token: str | None) -> str | None:
    """The account whose PRs count as the bot's own: the config's `hub_user`, else the
    token's own account (`whoami`); None with neither (then no PR is ours)."""
    if cfg.hub_user or not token:
        return cfg.hub_user
    return hub.call("whoami", hub.api.whoami)["name"]


def run_watch(args, token: str | None) -> int:
    """`depthcard watch`: rounds of discover → audit → publish."""
    from depthcard.analysis import ANALYSIS_VERSION
    from depthcard.bot import state_sync
    from depthcard.bot.dispatch import make_backend
    from depthcard.bot.state import StateStore
    from depthcard.bot.watch import Round, watch

    cfg = _config(args)
    if args.publish:
        cfg = cfg.model_copy(update={"dry_run": False})
    if not cfg.dry_run and not token:
        raise UserError("dry_run is off but there is no Hub token (HF_TOKEN or `hf auth login`)")
    hub = _hub(cfg, token)
    cfg = cfg.model_copy(update={"hub_user": _bot_user(cfg, hub, token)})
    synced = cfg.keep_state_in_results_repo
    if synced and not args.once:
        raise UserError("keep_state_in_results_repo needs --once (one round per pull/push)")
    parent = state_sync.pull(hub, cfg.results_repo, cfg.state_path) if synced else None
    store = StateStore(cfg.state_path)
    for repo in args.repo:
        store.push_inbox(repo, "command line")
    r = Round(hub, store, cfg, make_backend(cfg, hub, token), ANALYSIS_VERSION)
    counts = watch(r, once=args.once)
    store.close()
    if synced:
        state_sync.push(hub, cfg.results_repo, cfg.state_path, parent)
    if args.once and cfg.results_repo and not cfg.dry_run:
        from depthcard.bot.results_upload import refresh_leaderboard

        if refresh_leaderboard(hub, cfg.results_repo, cfg.space_url):
            log.info("leaderboard.jsonl rebuilt in %s", cfg.results_repo)
    if args.log_format == "json":
        print(json.dumps({"audits": counts, "dry_run": cfg.dry_run}))
    else:
        print(format_counts(counts, dry_run=cfg.dry_run))
    return 0


def format_counts(counts: dict[str, int], *, dry_run: bool) -> str:
    """One line: audits per state after the round."""
    from depthcard.bot.state import STATES

    parts = [f"{s} {counts[s]}" for s in STATES if counts.get(s)]
    mode = " (dry run: no PRs opened)" if dry_run else ""
    return "audits: " + (", ".join(parts) or "none") + mode


def run_serve(args, token: str | None) -> int:
    """`depthcard serve`: the webhook server, until interrupted."""
    from depthcard.bot.webhook import SECRET_ENV, make_server

    cfg = _config(args)
    server = make_server(cfg, os.environ.get(SECRET_ENV, ""), cfg.state_path)
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/"
    if args.log_format == "json":
        print(json.dumps({"webhook_server": url, "state": str(cfg.state_path)}), flush=True)
    else:
        print(f"depthcard: webhook server on {url} (state {cfg.state_path})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def status_table(rows) -> str:
    """The `depthcard status` table: counts per state, then one line per audit."""
    from depthcard.bot.state import STATES

    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    lines = ["state        audits"]
    lines += [f"{s:<12} {counts[s]:>6}" for s in STATES if counts.get(s)]
    if not rows:
        return "no audits recorded yet"
    lines += ["", f"{'state':<10} {'card repo':<34} {'revision':<9} {'tries':>5} {'PR':>4}  reason"]
    for r in rows:
        why = r.error or r.reason or ""
        pr = f"#{r.pr_num}" if r.pr_num else "-"
        lines.append(
            f"{r.state:<10} {r.target_repo[:34]:<34} {(r.third_sha or r.child_sha)[:7]:<9} "
            f"{r.attempts:>5} "
            f"{pr:>4}  {' '.join(why.split())[:120]}"
        )
    return "\n".join(lines)


def run_status(args, token: str | None) -> int:
    """`depthcard status`."""
    from depthcard.bot.state import StateStore

    cfg = _config(args)
    if not Path(cfg.state_path).exists():
        raise UserError(f"no state file at {cfg.state_path} (run `depthcard watch` first)")
    store = StateStore(cfg.state_path)
    rows = store.rows()
    print(status_json(rows) if args.json else status_table(rows))
    return 0


def status_json(rows) -> str:
    """`depthcard status --json`: a `schemas.bot_status.BotStatus` document."""
    from datetime import UTC, datetime

    from depthcard.schemas.bot_status import BotStatus, StatusAudit

    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    audits = [
        StatusAudit(
            key=r.key, state=r.state, card_repo=r.target_repo, child_repo=r.child_repo,
            child_sha=r.child_sha, base_repo=r.base_repo, third_repo=r.third_repo,
            attempts=r.attempts, pr_num=r.pr_num, reason=r.error or r.reason,
            updated=datetime.fromtimestamp(r.updated, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        for r in rows
    ]  # fmt: skip
    return BotStatus(counts=counts, audits=audits).model_dump_json(indent=1)


def run_public_report(args, token: str | None) -> int:
    """`depthcard public-report REPORT_DIR --out DIR`: what a job uploads."""
    from depthcard.report.public_files import write_public_copy

    if not (args.report_dir / "report.json").is_file():
        raise UserError(f"{args.report_dir}: no report.json (is this a depthcard report folder?)")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UserError(f"--out {args.out}: exists and is not an empty folder")
    written = write_public_copy(args.report_dir, args.out)
    print(f"depthcard: wrote {', '.join(written)} to {args.out}")
    return 0


def run_retry(args, token: str | None) -> int:
    """`depthcard retry KEY`."""
    from depthcard.bot.state import StateStore

    cfg = _config(args)
    store = StateStore(cfg.state_path)
    row = store.get(args.key)
    if row is None:
        raise UserError(f"no audit with key {args.key!r} (see `depthcard status`)")
    if not store.retry(args.key):
        raise UserError(f"audit {args.key} is {row.state}; only failed or skipped audits retry")
    print(f"queued {args.key} again")
    return 0


REPO_GONE = (
    "{repo} at the report's revision {rev} is not on the Hub ({why}); audit the revision "
    "the repo has now"
)


def run_publish(args, token: str | None) -> int:
    """`depthcard publish REPORT_DIR --repo CHILD`: the maintainer's path to the PR."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from depthcard.bot.publish import (
        PrLinks,
        Target,
        card_model,
        load_report,
        publish_report,
        render_body,
        render_title,
    )

    gone = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)
    cfg = _config(args)
    with reading_user_file():
        report = load_report(args.report_dir)
    model = card_model(report)
    audited = model.repo_id
    if audited != args.repo:
        raise UserError(f"the report audits {audited}, not {args.repo}")
    if not args.dry_run and not token:
        raise UserError("no Hub token: set HF_TOKEN or run `hf auth login` (or pass --dry-run)")
    if args.upload_report and cfg.results_repo is None:
        raise UserError("--upload-report needs results_repo in the bot config")
    hub = _hub(cfg, token)
    if args.upload_report and not args.dry_run:
        from depthcard.bot.results_upload import results_folder, upload_report

        upload_report(hub, cfg.results_repo, args.report_dir, report, cfg.space_url)
        print(f"depthcard: uploaded the report to {cfg.results_repo}/{results_folder(report)}")
    user = _bot_user(cfg, hub, token)  # only this account's PRs are updated or block us
    target = Target(args.repo, cfg.space_url, user, args.dry_run, links=PrLinks.from_config(cfg),
                    publisher="maintainer", report_dir=args.report_dir)  # fmt: skip
    try:
        result = publish_report(
            hub, report, target, record=lambda a, p, d: log.info("hub write %s %s: %s", p, a, d)
        )
    except gone as exc:  # the report names a repo or revision the Hub does not have
        first = " ".join(str(exc).split())[:200]
        raise UserError(REPO_GONE.format(repo=args.repo, rev=model.revision, why=first)) from None
    if args.dry_run:
        _show_dry_run(hub, report, cfg, render_title(report), render_body, args.report_dir)
    print(f"depthcard: {result.action}" + (f" PR #{result.pr_num}" if result.pr_num else "")
          + (f": {result.detail}" if result.detail else ""))  # fmt: skip
    return 0 if result.action in ("opened", "updated", "unchanged", "dry-run") else 1


def _show_dry_run(hub, report, cfg, title: str, render_body, report_dir: Path) -> None:
    from depthcard.bot.publish import (
        PrLinks,
        Target,
        card_model,
        extra_files,
        render_section,
    )
    from depthcard.report.card import splice_section
    from depthcard.report.eval_results import EVAL_RESULTS_PATH
    from depthcard.report.public_files import model_report_url

    model = card_model(report)  # the card the PR goes to: the fine-tune's in a three-model audit
    before = hub.read_text(model.repo_id, "README.md", hub.head(model.repo_id)) or ""
    after = splice_section(before, render_section(report, cfg.space_url))
    links = PrLinks.from_config(cfg)
    target = Target(model.repo_id, cfg.space_url, None, True, links=links, publisher="maintainer",
                    report_dir=report_dir)  # fmt: skip
    extra = extra_files(report, target)
    url = model_report_url(cfg.space_url, model.repo_id)
    print(f"title: {title}\n")
    print(render_body(report, url, links, publisher="maintainer", added=tuple(extra)))
    for path, data in extra.items():
        if path == EVAL_RESULTS_PATH:
            print(f"--- {path} (added by the PR)\n{data.decode('utf-8')}")
        else:
            print(f"--- {path} (added by the PR, {len(data)} bytes)")
    diff = difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                "README.md", "README.md (PR)")  # fmt: skip
    print("".join(diff))
