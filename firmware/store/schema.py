"""Opening the SQLite file: refusal checks, pragmas and schema migrations (blocking calls).

Why these pragmas: WAL lets readers run beside the single writer; `synchronous=FULL` makes every
commit fsync the WAL, so a commit that returned survives a power cut (with `NORMAL` a WAL commit is
only durable after the next checkpoint). Grouping many rows per commit is what keeps that affordable.
A large WAL (`wal_autocheckpoint`) lets a hot index page be rewritten many times in the WAL but copied
into the main file once per checkpoint, which is most of the SD-card write saving.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from firmware import fsaccess

from .errors import StoreError, StoreFull, StoreOpenError

SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x686E6D73  # "hnms": marks the file as a homenode message store
# Small pages: a row's index entry dirties one whole page, and WAL frames are written whole, so
# 1 KiB pages cut the bytes written per stored byte (data beyond ~100 bytes goes to overflow
# pages that are allocated in order, so big payloads lose nothing).
PAGE_SIZE = 1024

# Why this shape (measured with bench/write_amplification.py, see the package docstring): rows
# append in rowid order, so the table costs about one write per byte; each random-order index
# costs about one dirtied page per inserted row, so there are exactly two, each earning its cost:
# UNIQUE (hash) dedupes and finds a message by hash (the hash covers recipient and ns), and
# (recipient, ns) -- whose entries end in the rowid -- lists a mailbox in insertion order, so a
# page of `retrieve` costs the same in a mailbox of 100 or of 100,000. The expiry index is on the
# expiry *minute*: inside a minute entries are in rowid order, so new rows append instead of
# landing at random.
EXPIRY_BUCKET_MS = 60_000  # must equal the divisor in the expiry indexes and their queries

# Each entry upgrades the schema from version i to i+1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE messages (
        seq       INTEGER PRIMARY KEY,   -- rowid = insertion order, small columns before data
        hash      BLOB NOT NULL,
        recipient BLOB NOT NULL,
        ns        INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        expiry    INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    CREATE UNIQUE INDEX messages_mailbox ON messages (recipient, ns, hash);
    CREATE INDEX messages_expiry ON messages (expiry / 60000);
    -- running totals so opening a big store does not scan it
    CREATE TABLE totals (
        id    INTEGER PRIMARY KEY CHECK (id = 0),
        count INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    INSERT INTO totals (id, count, bytes) VALUES (0, 0, 0);
    """,
    # v2: insertion-order mailbox index, owner's proof per message, durable tombstones.
    # ADD COLUMN does not rewrite the table (proof lands after data: it is read with data).
    """
    ALTER TABLE messages ADD COLUMN proof BLOB;
    DROP INDEX messages_mailbox;
    CREATE UNIQUE INDEX messages_hash ON messages (hash);
    CREATE INDEX messages_mailbox_order ON messages (recipient, ns);
    -- a deleted message's hash, kept until no copy of it can still be alive anywhere
    CREATE TABLE tombstones (
        hash      BLOB PRIMARY KEY,
        recipient BLOB NOT NULL,
        ns        INTEGER NOT NULL,
        until     INTEGER NOT NULL,
        proof     BLOB
    ) WITHOUT ROWID;
    CREATE INDEX tombstones_until ON tombstones (until / 60000);
    CREATE INDEX tombstones_mailbox ON tombstones (recipient, ns);
    ALTER TABLE totals ADD COLUMN tombstones INTEGER NOT NULL DEFAULT 0;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def _fix_hint(path: Path) -> str:
    return (
        f"Nothing was changed. To start with an empty message store, move the file aside "
        f"(e.g. `mv {path} {path}.bad`, and its -wal/-shm files if present) and restart; "
        f"or restore it from a backup."
    )


# SQLite's primary result codes that mean "the data is damaged or foreign"; every other error
# while opening is about access (permission, read-only mount, missing path, full disk, I/O).
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def access_error(path: Path, e: BaseException) -> StoreOpenError:
    """A one-line error naming the real cause: permission, read-only mount, missing directory or
    a full disk -- found by looking at the paths, not guessed from SQLite's words."""
    directory = str(path.parent)
    for why in (
        fsaccess.directory_problem(directory),
        *(fsaccess.file_problem(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")),
        fsaccess.disk_full_problem(str(path)),
    ):
        if why:
            return StoreOpenError(f"cannot use the message store {path}: {why}")
    detail = getattr(e, "strerror", None) or str(e)
    return StoreOpenError(
        f"cannot open or write {path} ({detail}). Check that {directory} exists, that it and "
        f"the file are readable and writable by this user, and that the disk is not full or "
        f"failing (`dmesg`); the file itself was not changed."
    )


def store_error(e: BaseException, path: Path) -> StoreError:
    """A store error whose message names the real cause: a full disk is StoreFull (wire code
    `full`); permission, read-only mount or a missing directory are found by looking at the
    paths; only what is left is reported in SQLite's own words."""
    if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        err: StoreError = StoreFull(f"the disk holding {path} is full ({e})")
    elif isinstance(e, sqlite3.Error):
        why = None
        if not damaged(e) and not isinstance(e, (sqlite3.IntegrityError, sqlite3.InterfaceError,
                                                 sqlite3.ProgrammingError)):
            why = (fsaccess.directory_problem(str(path.parent)) or fsaccess.file_problem(
                str(path)) or fsaccess.file_problem(f"{path}-wal"))
        err = StoreError(f"cannot use {path}: {why}" if why else f"SQLite error on {path}: {e}")
    else:
        err = StoreError(f"store operation failed: {e!r}")
    err.__cause__ = e
    return err


def damaged(e: BaseException) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _DAMAGED


def check_file_header(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite before SQLite gets a chance to touch it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as e:
        raise access_error(path, e) from e
    if head and head != SQLITE_MAGIC:
        raise StoreOpenError(
            f"{path} is not an SQLite database (bad header), so it is not a homenode message "
            f"store. {_fix_hint(path)}"
        )


def connect(path: Path) -> sqlite3.Connection:
    """One connection; used by one thread at a time (the store serializes its use)."""
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)


def check_database(conn: sqlite3.Connection, path: Path) -> int:
    """Return the schema version, refusing foreign, newer or corrupt databases. Reads only."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
    except sqlite3.DatabaseError as e:
        if not damaged(e):
            raise access_error(path, e) from e
        raise StoreOpenError(
            f"{path} is corrupt or not an SQLite database ({e}). {_fix_hint(path)}"
        ) from e
    if version == 0 and tables:
        raise StoreOpenError(
            f"{path} is an SQLite database but not a homenode message store "
            f"(it has tables {sorted(tables)} and no schema version). {_fix_hint(path)}"
        )
    if version and app_id != APPLICATION_ID:
        raise StoreOpenError(
            f"{path} is an SQLite database of another application "
            f"(application_id {app_id:#x}). {_fix_hint(path)}"
        )
    if version > SCHEMA_VERSION:
        raise StoreOpenError(
            f"{path} was written by a newer homenode (schema version {version}; this version "
            f"understands up to {SCHEMA_VERSION}). Upgrade homenode; do not delete the file, it "
            f"holds stored messages."
        )
    return version


def configure(conn: sqlite3.Connection, *, wal_bytes: int, query_only: bool = False) -> None:
    """Our pragmas (see the module docstring); only after check_database accepted the file."""
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only on a new, empty file
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=FULL")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute(f"PRAGMA wal_autocheckpoint={max(1, int(wal_bytes) // page_size)}")
    # After a checkpoint the WAL is reused from its start; cap what stays allocated.
    conn.execute(f"PRAGMA journal_size_limit={int(wal_bytes) * 2}")
    if query_only:
        conn.execute("PRAGMA query_only=1")


def migrate(conn: sqlite3.Connection, version: int, path: Path) -> int:
    """Apply MIGRATIONS[version:], each in its own transaction with its version bump.

    A failed step is rolled back whole, so the file stays at the version it had; the error says
    why (a full disk, say: an upgrade rewrites indexes, which needs free space for a while).
    """
    while version < SCHEMA_VERSION:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in split_statements(MIGRATIONS[version]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            why = "" if damaged(e) else (fsaccess.disk_full_problem(str(path))
                                         or fsaccess.directory_problem(str(path.parent)) or "")
            raise StoreOpenError(
                f"cannot upgrade {path} from schema version {version} to {version + 1} ({e})"
                f"{'; ' + why if why else ''}. The upgrade was rolled back: nothing was changed "
                f"and no message was lost."
            ) from e
        version += 1
    return version


def split_statements(script: str) -> list[str]:
    """Split a script into statements (executescript() would COMMIT on its own)."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):  # false while the ';' is inside a comment or string
            if any(ln.split("--")[0].strip(" \t;") for ln in buf.splitlines()):
                out.append(buf.strip())
            buf = ""
    return out


