"""A thin wrapper over `huggingface_hub.HfApi`: retries with backoff, and nothing else clever.

Reads are retried on 429 (waiting what `Retry-After` asks), 5xx and timeouts. Writes are
retried only where a repeat cannot duplicate anything: a commit with `parent_commit` fails
with a conflict instead of landing twice, and opening a PR is never retried blindly (the
publisher looks for its own PR first). The token is handed to `HfApi` and never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
EXPAND = ["sha", "createdAt", "tags", "cardData", "gated", "private", "siblings", "safetensors"]


class HubUnavailable(OSError):
    """The Hub kept failing after every retry; the caller keeps its state and tries later."""


class UnreadableFile(ValueError):
    """A repo file the bot cannot read as text (not UTF-8): the repo is skipped, not retried."""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def retry_after(exc: BaseException) -> float | None:
    """Seconds a 429/503 asked us to wait (`Retry-After` delay-seconds), if it said."""
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def transient(exc: BaseException) -> bool:
    """True for failures worth retrying: rate limits, server errors, timeouts, dropped links."""
    if isinstance(exc, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError):
        return True
    return isinstance(exc, HfHubHTTPError) and _status(exc) in RETRY_STATUS


class Hub:
    """The Hub calls the bot makes, each retried as its kind allows.

    Args:
        token: Hub token (from HF_TOKEN at the entry point), or None.
        endpoint: Hub URL; None = HF_ENDPOINT or huggingface.co.
        retries: retries of a call after the first attempt.
        timeout: seconds per request where the client accepts a timeout.
        base_delay: first backoff delay, doubled per retry, capped at `max_delay`.
        sleep: the sleep function (tests pass a recorder instead of waiting).
    """

    def __init__(
        self,
        token: str | None,
        *,
        endpoint: str | None = None,
        retries: int = 4,
        timeout: float = 30.0,
        base_delay: float = 1.0,
        max_delay: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        cache_dir: Path | None = None,
    ):
        self.api = HfApi(endpoint=endpoint, token=token or False)
        self.endpoint = self.api.endpoint
        self.retries, self.timeout = retries, timeout
        self.base_delay, self.max_delay = base_delay, max_delay
        self.sleep = sleep
        self.cache_dir = cache_dir

    def call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)`, retried on transient failures with exponential backoff.

        Raises:
            HubUnavailable: still failing after every retry.
            HfHubHTTPError: a permanent failure (404, 403, 409, ...), raised at once.
        """
        delay = self.base_delay
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not transient(exc):
                    raise
                if attempt == self.retries:
                    raise HubUnavailable(f"{what}: Hub still failing ({_short(exc)})") from exc
                wait = min(self.max_delay, max(delay, retry_after(exc) or 0.0))
                log.warning(
                    "%s: %s; retry %d/%d in %.1fs",
                    what, _short(exc), attempt + 1, self.retries, wait,
                )  # fmt: skip
                self.sleep(wait)
                delay = min(self.max_delay, delay * 2)
        raise AssertionError("unreachable")

    # -- reads ----------------------------------------------------------------------------------

    def new_models(
        self, *, author: str | None, limit: int | None, filters: dict | None = None
    ) -> Iterator:
        """Models newest first (ModelInfo with the fields the bot reads), read lazily page by
        page: the caller stops where it has read enough, and the pages after are never asked
        for. Each page is retried by huggingface_hub itself (`paginate` uses `http_backoff`:
        429 and 5xx, `max_retries=5`), so this does not wrap it in `call`.

        Args:
            author: the organisation or user, or None for the whole Hub.
            limit: most models to read; None = every page.
            filters: further `list_models` arguments (gated, pipeline_tag, num_parameters,
                filter), answered by the server.
        """
        return iter(
            self.api.list_models(
                author=author, sort="created_at", expand=EXPAND, limit=limit, **(filters or {})
            )
        )

    def model_info(self, repo_id: str, revision: str | None = None):
        """ModelInfo of a repo (at a revision): card data, siblings, safetensors, and the
        Hub's model tree (`baseModels`)."""
        return self.call(
            f"model_info {repo_id}",
            self.api.model_info,
            repo_id,
            revision=revision,
            expand=[*EXPAND, "baseModels"],
            timeout=self.timeout,
        )

    def read_bytes(self, repo_id: str, filename: str, revision: str, repo_type: str = "model"):
        """A file of a repo at a revision, as bytes, or None when the file does not exist."""
        from huggingface_hub.errors import EntryNotFoundError

        def fetch() -> bytes | None:
            try:
                path = self.api.hf_hub_download(
                    repo_id, filename, revision=revision, repo_type=repo_type,
                    cache_dir=self.cache_dir, etag_timeout=self.timeout,
                )  # fmt: skip
            except EntryNotFoundError:
                return None
            return Path(path).read_bytes()

        return self.call(f"download {repo_id}/{filename}", fetch)

    def read_text(self, repo_id: str, filename: str, revision: str, repo_type: str = "model"):
        """A text file of a repo at a revision, or None when the file does not exist."""
        # Bytes, then decode: read_text() would turn CRLF into LF and change the card.
        data = self.read_bytes(repo_id, filename, revision, repo_type)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableFile(
                f"{repo_id}/{filename} is not UTF-8 text (byte {exc.start})"
            ) from None

    def head(self, repo_id: str, branch: str = "main") -> str:
        """The commit sha `branch` points at now."""
        return self.model_info(repo_id, revision=branch).sha

    def file_ids(self, repo_id: str, revision: str) -> dict[str, str]:
        """{path: blob id} of every file of a repo at a revision (folders left out)."""
        entries = self.call(
            f"tree {repo_id}@{revision}",
            lambda: list(self.api.list_repo_tree(repo_id, revision=revision, recursive=True)),
        )
        return {e.path: e.blob_id for e in entries if getattr(e, "blob_id", None)}

    def bot_prs(self, repo_id: str, author: str | None) -> list:
        """The pull requests on a repo opened by `author` (every PR when None), newest first."""
        return self.call(
            f"discussions {repo_id}",
            lambda: list(
                self.api.get_repo_discussions(
                    repo_id, author=author, discussion_type="pull_request"
                )
            ),
        )

    # -- writes ---------------------------------------------------------------------------------

    def open_pr(
        self, repo_id: str, *, readme: str, parent_commit: str, title: str, body: str,
        extra: dict[str, bytes] | None = None,
    ):  # fmt: skip
        """Open a PR changing README.md (and the `extra` files by path), based on
        `parent_commit`. Not retried (see module)."""
        ops = _operations(readme, extra)
        return self.api.create_commit(
            repo_id, ops, commit_message=title, commit_description=body,
            create_pr=True, parent_commit=parent_commit,
        )  # fmt: skip

    def update_pr(
        self, repo_id: str, pr_num: int, *, readme: str, parent_commit: str, title: str,
        extra: dict[str, bytes] | None = None,
    ):  # fmt: skip
        """Commit a new README.md (and `extra` files) to the bot's PR branch; safe to retry
        thanks to parent_commit."""
        return self.call(
            f"update PR #{pr_num} on {repo_id}",
            self.api.create_commit,
            repo_id,
            _operations(readme, extra),
            commit_message=title,
            revision=f"refs/pr/{pr_num}",
            parent_commit=parent_commit,
        )

    def comment(self, repo_id: str, pr_num: int, text: str):
        """Post a comment on a PR. Not retried: a repeat would post the comment twice."""
        return self.api.comment_discussion(repo_id, pr_num, text)

    def list_files(self, repo_id: str, repo_type: str = "dataset") -> list[str]:
        """Every file path of a repo at its head."""
        return self.call(
            f"list files {repo_id}",
            lambda: self.api.list_repo_files(repo_id, repo_type=repo_type),
        )

    def commit_files(
        self, repo_id: str, files: dict[str, bytes], message: str, repo_type: str = "dataset"
    ):
        """One commit adding or replacing `files` ({path: bytes}) on main; a repeat after a
        lost answer commits the same bytes again, which changes nothing."""
        ops = [CommitOperationAdd(path, data) for path, data in files.items()]
        return self.call(
            f"commit to {repo_id}",
            self.api.create_commit,
            repo_id,
            ops,
            commit_message=message,
            repo_type=repo_type,
        )

    def upload_folder(self, repo_id: str, folder: Path, path_in_repo: str, message: str):
        """Upload a report folder to the results dataset (idempotent: same content, same tree)."""
        return self.call(
            f"upload {repo_id}/{path_in_repo}",
            self.api.upload_folder,
            repo_id=repo_id,
            folder_path=str(folder),
            path_in_repo=path_in_repo,
            repo_type="dataset",
            commit_message=message,
        )


def _operations(readme: str, extra: dict[str, bytes] | None) -> list[CommitOperationAdd]:
    ops = [CommitOperationAdd("README.md", readme.encode("utf-8"))]
    return ops + [CommitOperationAdd(path, data) for path, data in (extra or {}).items()]


def _short(exc: BaseException) -> str:
    status = _status(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"HTTP {status}: {text}" if status else text
