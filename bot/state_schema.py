"""The tables of the bot's SQLite state, and the migration of files written by older bots.

`CREATE TABLE` holds the first release's columns; columns added since (`AUDIT_COLUMNS`) are
added by `migrate` (all nullable) in one write transaction, re-checking inside it so two
processes opening the same old file never add a column twice. New files get them the same way.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS audits (
    key TEXT PRIMARY KEY,
    base_repo TEXT,
    base_sha TEXT,
    child_repo TEXT NOT NULL,
    child_sha TEXT NOT NULL,
    analysis_version TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    parameters INTEGER,
    report_dir TEXT,
    job_id TEXT,
    pr_num INTEGER,
    lease_owner TEXT,
    lease_until REAL,
    not_before REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audits_state ON audits(state);
CREATE TABLE IF NOT EXISTS hub_writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    key TEXT,
    repo TEXT NOT NULL,
    action TEXT NOT NULL,
    phase TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS watched (
    child_repo TEXT PRIMARY KEY,
    base_repo TEXT,
    checked REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS blocked (
    repo TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (repo TEXT PRIMARY KEY, source TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# (column, SQL type) added to `audits`, in the order they were introduced.
AUDIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("third_repo", "TEXT"),  # a fine-tune of the child: a three-model audit (card goes there)
    ("third_sha", "TEXT"),
)


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def migrate(db: sqlite3.Connection) -> list[str]:
    """Add the missing `audits` columns; returns the names added (empty when up to date).

    `db` must be in autocommit mode (the state opens it with `isolation_level=None`).
    """
    if all(name in _columns(db, "audits") for name, _ in AUDIT_COLUMNS):
        return []
    added: list[str] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        have = _columns(db, "audits")
        for name, sql_type in AUDIT_COLUMNS:
            if name not in have:
                db.execute(f"ALTER TABLE audits ADD COLUMN {name} {sql_type}")
                added.append(name)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return added


def _expected_columns() -> dict[str, set[str]]:
    """Each table's columns as this bot writes them (the schema built in memory)."""
    mem = sqlite3.connect(":memory:", isolation_level=None)
    try:
        mem.executescript(SCHEMA)
        migrate(mem)
        tables = [r[0] for r in mem.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: _columns(mem, t) for t in tables if not t.startswith("sqlite_")}
    finally:
        mem.close()


def foreign_tables(db: sqlite3.Connection) -> str | None:
    """What makes an existing file another program's database, or None when it is ours.

    A table of ours that exists but lacks a first-release column (`CREATE TABLE` above) is
    someone else's: neither created nor migrated, so the bot must not write to the file.
    Columns added since (`AUDIT_COLUMNS`) may be missing: `migrate` adds them.
    """
    later = {name for name, _ in AUDIT_COLUMNS}
    have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for table, wanted in _expected_columns().items():
        if table in have:
            missing = sorted(wanted - _columns(db, table) - later)
            if missing:
                shown = ", ".join(missing[:3]) + (
                    f" and {len(missing) - 3} more" if missing[3:] else ""
                )
                return f"its {table} table has no column {shown}"
    return None


def open_schema(db: sqlite3.Connection) -> None:
    """Create the tables a new file lacks, then add the columns an older file lacks."""
    db.executescript(SCHEMA)
    migrate(db)
