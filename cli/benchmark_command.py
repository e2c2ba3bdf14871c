"""`depthcard publish-benchmark`: the prompt sets as a Hub benchmark dataset, in one commit.

Builds the files with `report.benchmark.benchmark_files` (eval.yaml, the dataset card, one
JSONL per prompt set) and commits them to a dataset repo, creating it when needed. With
`--out DIR` the files are written to a folder instead, and with `--dry-run` only listed:
neither touches the Hub. Publishing is always this command, never a side effect of a test.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from depthcard.schemas.errors import UserError
from depthcard.schemas.eval_results import is_repo_id

COMMIT_MESSAGE = "depthcard benchmark: prompt sets and eval.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, help="the benchmark dataset repo (org/name)")
    p.add_argument("--dry-run", action="store_true", help="list the files and show eval.yaml")
    p.add_argument("--out", type=Path, default=None, help="write the files here, not the Hub")
    p.add_argument("--private", action="store_true", help="create the dataset as private")


def run(args, token: str | None) -> int:
    """Build the benchmark's files and publish (or show, or write) them."""
    from depthcard.report.benchmark import EVAL_FILE, benchmark_files

    if not is_repo_id(args.repo):
        raise UserError(f"--repo must be org/name, got {args.repo!r}")
    files = benchmark_files()
    if args.dry_run:
        for path, data in files.items():
            print(f"{path}  ({len(data):,} bytes)")
        print(f"\n{EVAL_FILE}:\n{files[EVAL_FILE].decode('utf-8')}")
        return 0
    if args.out is not None:
        for path, data in files.items():
            target = args.out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        print(f"depthcard: wrote {len(files)} files to {args.out}")
        return 0
    if not token:
        raise UserError("set HF_TOKEN to publish the benchmark (or pass --dry-run / --out)")
    from depthcard.bot.hub import Hub

    hub = Hub(token, endpoint=os.environ.get("HF_ENDPOINT"))
    hub.call(
        f"create {args.repo}",
        hub.api.create_repo,
        args.repo,
        repo_type="dataset",
        private=args.private,
        exist_ok=True,
    )
    info = hub.commit_files(args.repo, files, COMMIT_MESSAGE)
    print(f"depthcard: published the benchmark to {args.repo} at {info.oid}")
    print(
        "set benchmark_repo and eval_results: true in the bot config so its PRs add "
        ".eval_results/depthcard.yaml (the Hub shows it once it has registered the benchmark)"
    )
    return 0
