"""Where the Space finds its reports: local folders or the results dataset repo on the Hub.

The results dataset holds `reports/{org}/{model}/{child revision}/report.json` (docs/design.md,
Where results live). Every report is identified by the same three parts, derived from the
report itself (`report_id`), so a card's link `?report={org}/{model}/{revision}` opens the
same report whether it was read from the Hub or from a local folder. A file that does not
validate is skipped with its reason recorded, never shown as if it were a report.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from depthcard.schemas.report import AuditReport

log = logging.getLogger(__name__)

SPACE_DIR = Path(__file__).resolve().parent
DEFAULT_REPORTS_DIR = SPACE_DIR / "reports"
# `bash run.sh demo` and the README's demo write the calibration audit here.
DEMO_AUDIT_DIR = SPACE_DIR.parent / "demo-audit"
REPORT_FILE = "report.json"
SAMPLES_FILE = "samples.jsonl"
# Reports larger than this are refused before parsing, in folders and in uploads alike.
MAX_REPORT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ReportEntry:
    """One loaded report and where it came from."""

    id: str
    report: AuditReport
    source: Path

    @property
    def org(self) -> str:
        """Organisation of the child model ('local' for a local folder)."""
        return self.id.split("/", 1)[0]


@dataclass(frozen=True)
class StoreSource:
    """Where a store's reports come from, so it can be read again (`refresh`)."""

    reports_dir: Path | None = None
    hub_repo: str | None = None
    token: str | None = None


@dataclass
class ReportStore:
    """Reports by id, in the order they were found, plus the files that were skipped.

    `source` and `loaded_at` (time.monotonic() of the last read) are set by `load_store`;
    a store built by hand has no source and `refresh` leaves it as it is.
    """

    entries: dict[str, ReportEntry] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    source: StoreSource | None = None
    loaded_at: float = 0.0
    version: int = 0  # bumped by every refresh, so a page can tell whether it is behind
    # Reports read from model repos (`?model=` links, space.model_report), kept apart so a
    # refresh of the store's own source never drops one a page is showing.
    linked: dict[str, ReportEntry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, entry: ReportEntry) -> None:
        """Add a report. One with the same id and the same audit setting replaces the earlier
        one; one with another setting is kept beside it: the newer report holds the id, the
        older moves to `{id}@{setting}`, so two settings are never merged into one row."""
        old = self.entries.get(entry.id)
        if old is not None and audit_setting(old.report) != audit_setting(entry.report):
            newer, older = sorted((old, entry), key=lambda e: e.report.created_at, reverse=True)
            moved = f"{older.id}@{audit_setting(older.report)}"
            self.entries[moved] = ReportEntry(id=moved, report=older.report, source=older.source)
            entry = newer
        self.entries[entry.id] = entry

    def get(self, report_id: str) -> ReportEntry | None:
        """The entry with this id (the store's own first, then those read from model repos),
        or None."""
        return self.entries.get(report_id) or self.linked.get(report_id)

    def ids(self) -> list[str]:
        """Every id, in the order found."""
        return list(self.entries)


def report_id(report: AuditReport) -> str:
    """`{org}/{model}/{revision}` of the model whose card links here (the fine-tune's in a
    three-model audit, as `bot.publish.card_model`); local models are
    `local/{folder}/{hash[:12]}`."""
    child = report.models.third or report.models.child
    if child.source == "hub":
        return f"{child.repo_id}/{child.revision}"
    return f"local/{Path(child.path).name}/{child.content_sha256[:12]}"


def audit_setting(report: AuditReport) -> str:
    """A short fingerprint of what decides the numbers besides the models: the analysis
    version and every audit setting (`report.config`); two audits of one revision differ in it
    exactly when their numbers may."""
    text = f"{report.tool.analysis_version}\n{report.config.model_dump_json()}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def base_id(report_id: str) -> str:
    """The id without its setting suffix: every audit of one model revision shares it."""
    return report_id.split("@", 1)[0]


def samples_path(entry: ReportEntry) -> Path | None:
    """The entry's samples.jsonl (every judged answer), when its folder has one."""
    path = entry.source.with_name(SAMPLES_FILE)
    return path if path.is_file() else None


def read_report(path: Path) -> AuditReport:
    """Read and validate one report.json.

    Raises:
        ValueError: the file is larger than MAX_REPORT_BYTES.
        pydantic.ValidationError: the file is not a valid report.
        OSError: the file cannot be read.
    """
    size = path.stat().st_size
    if size > MAX_REPORT_BYTES:
        raise ValueError(f"{size} bytes, over the {MAX_REPORT_BYTES} byte limit")
    return AuditReport.model_validate_json(path.read_bytes())


def load_folder(root: Path, store: ReportStore | None = None) -> ReportStore:
    """Add every `report.json` under `root` (at any depth) to `store`, sorted by path."""
    store = ReportStore() if store is None else store
    if not root.is_dir():
        return store
    for path in sorted(root.rglob(REPORT_FILE)):
        try:
            report = read_report(path)
        except (ValidationError, ValueError, OSError) as exc:
            reason = str(exc).splitlines()[0]
            log.warning("skipping %s: %s", path, reason)
            store.skipped.append((path, reason))
            continue
        store.add(ReportEntry(id=report_id(report), report=report, source=path))
    return store


def default_folders() -> list[Path]:
    """`space/reports/`, plus the demo audit folder when `run.sh demo` has written one."""
    return [DEFAULT_REPORTS_DIR, DEMO_AUDIT_DIR]


def download_reports(hub_repo: str, token: str | None = None) -> Path:
    """Fetch only the report.json files of the results dataset repo; returns its local copy."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo_id=hub_repo,
        repo_type="dataset",
        allow_patterns=[f"reports/**/{REPORT_FILE}"],
        token=token,
    )
    return Path(folder) / "reports"


def load_store(
    reports_dir: Path | None = None, hub_repo: str | None = None, token: str | None = None
) -> ReportStore:
    """The Space's reports: the Hub dataset if given, else `reports_dir`, else the defaults.

    Args:
        reports_dir: a local folder searched at any depth for report.json files.
        hub_repo: the results dataset repo (`org/name`); its reports are downloaded.
        token: Hub token for a private results repo.
    """
    store = ReportStore(source=StoreSource(reports_dir, hub_repo, token))
    if hub_repo:
        folders = [download_reports(hub_repo, token=token)]
    elif reports_dir is not None:
        folders = [Path(reports_dir)]
    else:
        folders = default_folders()
    for folder in folders:
        load_folder(folder, store)
    store.loaded_at = time.monotonic()
    log.info("loaded %d report(s), skipped %d", len(store.entries), len(store.skipped))
    return store


def refresh(store: ReportStore, max_age: float) -> bool:
    """Read the store's source again when its reports are older than `max_age` seconds.

    Every visitor's page asks on its own timer; only one read runs at a time, and a read
    within `max_age` of the last is skipped, so the Hub sees one download per period however
    many pages are open. The entries are swapped in one assignment: a reader sees the old
    reports or the new ones, never half of each. A read that fails keeps the old reports.

    Returns:
        True when the reports were read again.
    """
    if store.source is None or time.monotonic() - store.loaded_at < max_age:
        return False
    with store._lock:
        if time.monotonic() - store.loaded_at < max_age:
            return False  # another page refreshed it while this one waited
        store.loaded_at = time.monotonic()
        try:
            fresh = load_store(**vars(store.source))
        except Exception:  # the Hub or the disk failed: keep showing what we have
            log.warning("refreshing the reports failed; keeping the old ones", exc_info=True)
            return False
        store.entries, store.skipped = fresh.entries, fresh.skipped
        store.version += 1
        return True
