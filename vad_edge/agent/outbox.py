"""The outbox: events are committed to SQLite before they are published and leave only on PUBACK.

WAL journal with synchronous=FULL, so a committed event survives a killed process or a power cut. The
sequence number lives in the same database and is assigned in the same transaction as the insert, so it
is monotonic across restarts. The outbox is bounded: beyond max_events the oldest `update` events go first
(start and end events matter more), then the oldest of any kind; drops are counted.
The same database keeps the live settings (detect on/off, threshold multipliers) across restarts.
"""

import json
import logging
import os
import sqlite3
import time
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vad_edge.outbox")


class StorageError(OSError):
    """The outbox database cannot be written (disk full, I/O error); the message names the file."""


@dataclass(frozen=True)
class Pending:
    seq: int
    topic: str
    event: dict


class Outbox:
    def __init__(self, path: Path, max_events: int = 10000):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self._lock = threading.Lock()
        try:
            self._open()
        except sqlite3.OperationalError as exc:  # locked by another process, unreadable, ...
            raise StorageError(f"{path}: cannot open the outbox ({exc}); is another vad-edge running with this "
                               f"state_dir?") from exc
        except sqlite3.DatabaseError as exc:  # not a database, or a malformed one: keep it, start afresh
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            self._db.close()
            for file in self._files():
                os.replace(file, f"{aside}{file.name[len(path.name):]}")
            log.error("OUTBOX CORRUPT: %s (%s) was moved to %s for inspection; a new, empty outbox starts now. "
                      "Events still pending in it were not sent, and the event seq starts again at 1.",
                      path, exc, aside)
            self._open()

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=2)
        self._db.execute("PRAGMA journal_mode=WAL")
        for file in self._files():  # events and settings are the agent's alone (older builds: 0644)
            file.chmod(0o600)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY, event_id TEXT UNIQUE NOT NULL, type TEXT NOT NULL,
                topic TEXT NOT NULL, payload TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT OR IGNORE INTO meta VALUES ('seq', '0'), ('dropped', '0');
            """
        )

    def _files(self) -> list[Path]:
        """The database and SQLite's WAL and shared-memory files beside it, those that exist."""
        return [file for suffix in ("", "-wal", "-shm") if (file := Path(f"{self.path}{suffix}")).exists()]

    @contextmanager
    def _writing(self, what: str):
        """SQLite's write failures as a StorageError that names the file and what was being done."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot {what} ({exc})") from exc

    def add(self, topic: str, event: dict) -> Pending:
        """Assigns the next seq, commits the event (fsynced) and returns it; trims the oldest when full.
        StorageError when it cannot be written: nothing is stored then, not even the seq."""
        with self._writing("store an event"), self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = int(self._db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0]) + 1
            event = {**event, "seq": seq}
            self._db.execute("UPDATE meta SET value=? WHERE key='seq'", (str(seq),))
            self._db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                             (seq, event["event_id"], event["type"], topic, json.dumps(event)))
            # The camera's running event, in the same transaction: a start after a crash can end it.
            key = f"open/{event['camera']}"
            if event["type"] == "end":
                self._db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                                 (key, json.dumps({"topic": topic, "event": event})))
            self._trim()
        return Pending(seq, topic, event)

    def _trim(self) -> None:
        excess = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0] - self.max_events
        if excess <= 0:
            return
        for kind_filter in ("WHERE type='update'", ""):
            rows = self._db.execute(f"SELECT seq FROM events {kind_filter} ORDER BY seq LIMIT ?", (excess,)).fetchall()
            self._db.executemany("DELETE FROM events WHERE seq=?", rows)
            self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped'", (len(rows),))
            excess -= len(rows)
            if excess <= 0:
                return

    def ack(self, seq: int) -> None:
        with self._writing("delete an acknowledged event"), self._lock:
            self._db.execute("DELETE FROM events WHERE seq=?", (seq,))

    def pending(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload FROM events ORDER BY seq").fetchall()
        return [Pending(seq, topic, json.loads(payload)) for seq, topic, payload in rows]

    def open_events(self) -> list[Pending]:
        """The last stored event of each camera whose anomaly had not ended when the agent last stopped."""
        with self._lock:
            rows = self._db.execute("SELECT value FROM meta WHERE key LIKE 'open/%' ORDER BY key").fetchall()
        return [Pending(record["event"]["seq"], record["topic"], record["event"])
                for record in map(json.loads, (value for (value,) in rows))]

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def dropped(self) -> int:
        return int(self.get("dropped", "0"))

    def get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def put(self, key: str, value: str) -> None:
        with self._writing(f"save setting {key}"), self._lock:
            self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()
