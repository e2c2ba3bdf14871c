"""Keep the state file in the results dataset repo (for stateless runners such as Actions).

`pull` downloads `state/depthcard-state.sqlite` at the repo's head and returns that head's
sha; `push` commits the file back with `parent_commit` set to it, so when two watchers ran
at once the second push fails with a conflict instead of overwriting the first one's state.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import EntryNotFoundError

from depthcard.bot.hub import Hub

log = logging.getLogger(__name__)
STATE_IN_REPO = "state/depthcard-state.sqlite"


class StateConflict(OSError):
    """Another writer committed the state since we pulled it."""


def pull(hub: Hub, repo: str, local: Path) -> str:
    """Download the state file (if the repo has one) over `local`; returns the head sha."""
    head = hub.call(f"dataset_info {repo}", hub.api.dataset_info, repo).sha

    def fetch():
        try:
            return hub.api.hf_hub_download(
                repo, STATE_IN_REPO, repo_type="dataset", revision=head, cache_dir=hub.cache_dir
            )
        except EntryNotFoundError:
            return None

    path = hub.call(f"download {repo}/{STATE_IN_REPO}", fetch)
    if path is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, local)
        log.info("state pulled from %s at %s", repo, head)
    return head


def push(hub: Hub, repo: str, local: Path, parent: str) -> None:
    """Commit the state file back on top of `parent`.

    Raises:
        StateConflict: the repo moved since `pull` (another watcher ran).
    """
    from huggingface_hub.errors import HfHubHTTPError

    op = CommitOperationAdd(STATE_IN_REPO, local.read_bytes())
    try:
        hub.api.create_commit(repo, [op], commit_message="depthcard: update bot state",
                              repo_type="dataset", parent_commit=parent)  # fmt: skip
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) in (409, 412):
            raise StateConflict(
                f"{repo} changed since the state was pulled: another watcher ran at the same "
                "time; this run's state was not written (its Hub writes are in the PRs)"
            ) from exc
        raise
    log.info("state pushed to %s", repo)
