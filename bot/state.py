"""The bot's memory: one SQLite file, a row per audit key, a log of every Hub write.

An audit key is `base sha / child sha / analysis version` (the same string the report carries);
a three-model audit (a fine-tune of the child as third model) puts the fine-tune's sha after
the child's. The tables, and the migration of older files, are in `bot.state_schema`.
A row moves `discovered → queued → running → succeeded → published`, or ends `skipped`,
`failed` (attempts and error kept) or `opted_out`. Every transition is one transaction that
only succeeds when the row is still in the state the caller saw (compare-and-set), so two bot
processes sharing the file never dispatch or publish the same key twice. Claims carry a lease:
a process that dies holding one loses it when the lease runs out, and the next round resumes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from depthcard.bot.state_schema import foreign_tables, open_schema
from depthcard.schemas.errors import UserError

log = logging.getLogger(__name__)

STATE_UNREADABLE = (
    "state file {path} is not a readable SQLite database ({problem}); "
    "move it aside to start with an empty state"
)


STATE_FOREIGN = (
    "state file {path} is not a depthcard state ({problem}); set state_path to another file"
)


class StateFileError(UserError):
    """The bot's state file exists but is not a usable SQLite database."""


State = Literal[
    "discovered", "queued", "running", "succeeded", "published", "skipped", "failed", "opted_out"
]
STATES: tuple[str, ...] = State.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AuditRow:
    """One audit as stored."""

    key: str
    base_repo: str | None
    base_sha: str | None
    child_repo: str
    child_sha: str
    analysis_version: str
    state: str
    reason: str | None
    attempts: int
    error: str | None
    parameters: int | None
    report_dir: str | None
    job_id: str | None
    pr_num: int | None
    lease_owner: str | None
    lease_until: float | None
    not_before: float
    created: float
    updated: float
    third_repo: str | None = None  # a fine-tune of the child: three-model audit, card goes there
    third_sha: str | None = None

    @property
    def target_repo(self) -> str:
        """The repo whose card gets the section: the fine-tune of a three-model audit."""
        return self.third_repo or self.child_repo


def audit_key(
    base_sha: str | None, child_sha: str, analysis_version: str, third_sha: str | None = None
) -> str:
    """The key of an audit; `none` stands for a missing base (skips before pairing).

    A three-model audit puts the third model's sha after the child's, as the report does.
    """
    third = f"{third_sha}/" if third_sha else ""
    return f"{base_sha or 'none'}/{child_sha}/{third}{analysis_version}"


class StateStore:
    """The SQLite state file. Open one per process; it is safe to share the file.

    `checkpoint`, when set, is called with the name of each point the bot reaches: a row's
    new state right after its transition commits, and `<action>:<phase>` (e.g.
    `open-pr:done`) right before a Hub write's log entry is stored, so `open-pr:done` is the
    moment a PR exists on the Hub but not yet in the log. The crash tests set it (on the
    class, from a launcher in tests/) to kill the process there; nothing else does.
    """

    checkpoint: Callable[[str], None] | None = None

    def __init__(
        self, path: Path, *, clock=time.time, owner: str | None = None, check: bool = True
    ):
        """Open (or create) the state file.

        Args:
            check: read every page first (`PRAGMA quick_check`) so a damaged file is refused
                here, in one line, instead of failing part-way through a round. The webhook
                handler, which opens the file once per event after the server's start-up
                check, passes False.

        Raises:
            StateFileError: the path is a folder, the file is not a SQLite database or is
                damaged, or it holds tables of another schema. Nothing is written to it then.
        """
        self.path = Path(path)
        self._clock = clock
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}"
        if self.path.is_dir():
            raise StateFileError(STATE_UNREADABLE.format(path=self.path, problem="it is a folder"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE, which
            # takes the write lock up front so a compare-and-set cannot interleave with another.
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        except (OSError, sqlite3.OperationalError) as exc:
            raise StateFileError(STATE_UNREADABLE.format(path=self.path, problem=exc)) from None
        self._db.row_factory = sqlite3.Row
        try:
            # Both checks come before the first write (WAL mode, tables), so a file the bot
            # refuses is left exactly as it was.
            if check:
                _check_pages(self._db)
            foreign = foreign_tables(self._db)
            if foreign:
                raise StateFileError(STATE_FOREIGN.format(path=self.path, problem=foreign))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            open_schema(self._db)
        except (StateFileError, sqlite3.OperationalError):
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            self._db.close()
            raise StateFileError(STATE_UNREADABLE.format(path=self.path, problem=exc)) from None

    def _reached(self, point: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(point)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- rows -------------------------------------------------------------------------------

    def add(
        self,
        *,
        base_repo: str | None,
        base_sha: str | None,
        child_repo: str,
        child_sha: str,
        analysis_version: str,
        state: State,
        reason: str | None = None,
        parameters: int | None = None,
        third_repo: str | None = None,
        third_sha: str | None = None,
    ) -> bool:
        """Insert a new audit row; False (and nothing changed) when the key is already known."""
        key = audit_key(base_sha, child_sha, analysis_version, third_sha)
        now = self._clock()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO audits (key, base_repo, base_sha, child_repo, child_sha,"
                " third_repo, third_sha, analysis_version, state, reason, parameters, created,"
                " updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, base_repo, base_sha, child_repo, child_sha, third_repo, third_sha,
                 analysis_version, state, reason, parameters, now, now),
            )  # fmt: skip
        if cur.rowcount:
            why = f" ({reason})" if reason else ""
            log.info("audit %s (%s): %s%s", key, third_repo or child_repo, state, why)
            self._reached(state)
        return bool(cur.rowcount)

    def get(self, key: str) -> AuditRow | None:
        """The row of `key`, or None."""
        row = self._db.execute("SELECT * FROM audits WHERE key = ?", (key,)).fetchone()
        return AuditRow(**dict(row)) if row else None

    def rows(self, state: str | None = None) -> list[AuditRow]:
        """All rows (of one state), oldest first."""
        sql, args = "SELECT * FROM audits", ()
        if state is not None:
            sql, args = sql + " WHERE state = ?", (state,)
        return [AuditRow(**dict(r)) for r in self._db.execute(sql + " ORDER BY created", args)]

    def for_child(self, child_repo: str) -> list[AuditRow]:
        """Every row of one child repo."""
        cur = self._db.execute(
            "SELECT * FROM audits WHERE child_repo = ? ORDER BY created", (child_repo,)
        )
        return [AuditRow(**dict(r)) for r in cur]

    def transition(
        self, key: str, expect: tuple[str, ...], to: State, *, lease: float | None = None, **fields
    ) -> bool:
        """Move `key` from one of `expect` to `to` (and set `fields`); False when it was not.

        The lease is cleared (a transition ends the caller's claim) unless `lease` seconds
        are given: then the caller holds the row in its new state, taken in the same
        transaction so no other process can slip in between.
        """
        allowed = {"reason", "error", "attempts", "report_dir", "job_id", "pr_num",
                   "not_before", "parameters"}  # fmt: skip
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} in a transition")
        sets = ", ".join(f"{name} = ?" for name in fields)
        sql = (
            f"UPDATE audits SET state = ?, updated = ?, lease_owner = ?, lease_until = ?"
            f"{', ' + sets if sets else ''} WHERE key = ? AND state IN "
            f"({', '.join('?' for _ in expect)})"
        )
        now = self._clock()
        owner, until = (self.owner, now + lease) if lease is not None else (None, None)
        with self._tx() as db:
            cur = db.execute(sql, (to, now, owner, until, *fields.values(), key, *expect))
        if cur.rowcount:
            log.info("audit %s: %s -> %s", key, "/".join(expect), to)
            self._reached(to)
        return bool(cur.rowcount)

    def claim(self, key: str, state: str, lease_seconds: float) -> bool:
        """Take the lease on a row in `state` that nobody holds (or whose holder is gone).

        A lease is free when it ran out, or when its holder was a process on this machine
        that no longer exists (a crash): the next round resumes at once instead of waiting.
        """
        now = self._clock()
        with self._tx() as db:
            row = db.execute(
                "SELECT lease_owner, lease_until FROM audits WHERE key = ? AND state = ?",
                (key, state),
            ).fetchone()
            if row is None:
                return False
            owner, until = row
            free = until is None or until < now or owner == self.owner or self._dead(owner)
            if not free:
                return False
            db.execute(
                "UPDATE audits SET lease_owner = ?, lease_until = ?, updated = ? WHERE key = ?",
                (self.owner, now + lease_seconds, now, key),
            )
        return True

    def release(self, key: str) -> None:
        """Give up the lease on `key` without changing its state (try again next round)."""
        with self._tx() as db:
            db.execute(
                "UPDATE audits SET lease_owner = NULL, lease_until = NULL WHERE key = ?"
                " AND lease_owner = ?",
                (key, self.owner),
            )

    def _dead(self, owner: str | None) -> bool:
        """True when `owner` names a process of this machine that is gone."""
        host, _, pid = (owner or "").rpartition(":")
        if host != os.uname().nodename or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def set_fields(self, key: str, **fields) -> None:
        """Record progress inside a state the caller holds the lease of (job id, report dir)."""
        allowed = {"report_dir", "job_id", "parameters"}
        if set(fields) - allowed:
            raise ValueError(f"cannot set {sorted(set(fields) - allowed)} outside a transition")
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE audits SET {sets}, updated = ? WHERE key = ?",
                (*fields.values(), self._clock(), key),
            )

    def claimable(self, state: str) -> list[AuditRow]:
        """Rows of `state` whose lease is free and whose retry time has come, oldest first."""
        now = self._clock()
        cur = self._db.execute(
            "SELECT * FROM audits WHERE state = ? AND not_before <= ? ORDER BY created",
            (state, now),
        )
        rows = [AuditRow(**dict(r)) for r in cur]
        return [
            r
            for r in rows
            if r.lease_until is None
            or r.lease_until < now
            or r.lease_owner == self.owner
            or self._dead(r.lease_owner)
        ]

    def retry(self, key: str) -> bool:
        """Put a failed or skipped audit back in the queue with its attempts reset."""
        return self.transition(
            key, ("failed", "skipped"), "queued", attempts=0, error=None, reason=None, not_before=0
        )

    # -- hub writes, watched repos, blocks, cursor ---------------------------------------------

    def log_write(self, repo: str, action: str, phase: str, key: str | None, detail: str) -> None:
        """Append to the log of Hub writes (phase: intent, done, failed, dry-run)."""
        self._reached(f"{action}:{phase}")
        with self._tx() as db:
            db.execute(
                "INSERT INTO hub_writes (at, key, repo, action, phase, detail)"
                " VALUES (?,?,?,?,?,?)",
                (self._clock(), key, repo, action, phase, detail),
            )
        log.info("hub write %s %s on %s: %s", phase, action, repo, detail)

    def writes(self) -> list[dict]:
        """The Hub write log, oldest first."""
        return [dict(r) for r in self._db.execute("SELECT * FROM hub_writes ORDER BY id")]

    def reserve_pr(
        self, org: str, since: float, cap: int, *, repo: str, key: str | None, detail: str
    ) -> bool:
        """Log the intent to open a PR on `repo`, unless `org` already has `cap` PRs opened
        or in flight since `since`: False, nothing logged.

        A slot is an `open-pr` intent; only the failure of that very attempt (the next
        `failed` record of the same repo and key, before another intent) frees it. A failure
        with no intent before it (a conflict found before any write) frees nothing. Count and
        log are one transaction, so two watchers cannot both take the last slot.
        """
        self._reached("open-pr:intent")
        with self._tx() as db:
            row = db.execute(_TAKEN_SLOTS, (since, _like_prefix(org))).fetchone()
            if int(row[0]) >= cap:
                return False
            db.execute(
                "INSERT INTO hub_writes (at, key, repo, action, phase, detail)"
                " VALUES (?,?,?,?,?,?)",
                (self._clock(), key, repo, "open-pr", "intent", detail),
            )
        log.info("hub write intent open-pr on %s: %s", repo, detail)
        return True

    def prs_opened_since(self, org: str, since: float) -> int:
        """How many PRs (not updates, not dry runs) the bot opened in `org` since `since`."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM hub_writes WHERE action = 'open-pr' AND phase = 'done'"
            " AND at >= ? AND repo LIKE ? ESCAPE '\\'",
            (since, _like_prefix(org)),
        ).fetchone()
        return int(row[0])

    def watch(self, child_repo: str, base_repo: str | None) -> None:
        """Remember a child so later rounds re-check it for new revisions."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO watched (child_repo, base_repo) VALUES (?, ?) ON CONFLICT(child_repo)"
                " DO UPDATE SET base_repo = excluded.base_repo",
                (child_repo, base_repo),
            )

    def watched(self, limit: int) -> list[tuple[str, str | None]]:
        """Up to `limit` watched children, least recently checked first; marks them checked."""
        rows = self._db.execute(
            "SELECT child_repo, base_repo FROM watched ORDER BY checked LIMIT ?", (limit,)
        ).fetchall()
        with self._tx() as db:
            db.executemany(
                "UPDATE watched SET checked = ? WHERE child_repo = ?",
                [(self._clock(), r[0]) for r in rows],
            )
        return [(r[0], r[1]) for r in rows]

    def block(self, repo: str, reason: str) -> None:
        """Never open another PR on `repo` (closed PR, opt-out)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO blocked (repo, reason, at) VALUES (?, ?, ?)",
                (repo, reason, self._clock()),
            )

    def blocked(self, repo: str) -> str | None:
        """Why `repo` is blocked, or None."""
        row = self._db.execute("SELECT reason FROM blocked WHERE repo = ?", (repo,)).fetchone()
        return row[0] if row else None

    def push_inbox(self, repo: str, source: str) -> None:
        """Ask the next round to examine `repo` (webhook events, `depthcard watch --repo`)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO inbox (repo, source, at) VALUES (?, ?, ?)",
                (repo, source, self._clock()),
            )

    def inbox(self) -> list[str]:
        """Repos waiting to be examined, oldest first."""
        return [r[0] for r in self._db.execute("SELECT repo FROM inbox ORDER BY at")]

    def pop_inbox(self, repo: str) -> None:
        """Done with `repo` (called after it was examined, so a crash examines it again)."""
        with self._tx() as db:
            db.execute("DELETE FROM inbox WHERE repo = ?", (repo,))

    def get_value(self, name: str) -> str | None:
        """A stored value (the discovery cursor)."""
        row = self._db.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_value(self, name: str, value: str) -> None:
        """Store a value."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO kv (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def counts(self) -> dict[str, int]:
        """Number of audits per state."""
        cur = self._db.execute("SELECT state, COUNT(*) FROM audits GROUP BY state")
        return dict(cur.fetchall())


def _check_pages(db: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError when a page of the file is damaged."""
    found = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
    if found != ["ok"]:
        first = str(found[0]).splitlines()[-1] if found else "no answer"
        raise sqlite3.DatabaseError(f"database disk image is malformed: {first}")


# Intents of one organisation since a time, less those whose own attempt failed: a `failed`
# record of the same repo and key after the intent, with no newer intent in between.
_TAKEN_SLOTS = """
SELECT COUNT(*) FROM hub_writes AS i
WHERE i.action = 'open-pr' AND i.phase = 'intent' AND i.at >= ? AND i.repo LIKE ? ESCAPE '\\'
AND NOT EXISTS (
    SELECT 1 FROM hub_writes AS f
    WHERE f.action = 'open-pr' AND f.phase = 'failed' AND f.repo = i.repo
    AND f.key IS i.key AND f.id > i.id
    AND NOT EXISTS (
        SELECT 1 FROM hub_writes AS n
        WHERE n.action = 'open-pr' AND n.phase = 'intent' AND n.repo = i.repo
        AND n.key IS i.key AND n.id > i.id AND n.id < f.id
    )
)
"""


def _like_prefix(org: str) -> str:
    """A LIKE pattern (escape character backslash) for every repo of `org`."""
    return org.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
