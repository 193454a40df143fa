"""The outbox: events are committed to SQLite before they are published and leave only on PUBACK.

WAL journal with synchronous=FULL, so a committed event survives a killed process or a power cut. The
sequence number lives in the same database and is assigned in the same transaction as the insert, so it
is monotonic across restarts. The outbox is bounded: beyond max_events, or beyond max_bytes of stored
events, the oldest `update` events go first (start and end events matter more), then the oldest of any
kind; drops are counted.

Its footprint on the state disk is bounded too. SQLite's WAL grows by whole pages per transaction (about
20 KB an event) and is checkpointed back into the database only every 1,000 pages by default: on a small
state partition the log alone filled the disk and no write could ever succeed again. Here the WAL is
checkpointed every WAL_CHECKPOINT_PAGES and kept at that size: after a checkpoint SQLite rewrites the same
file from its start, so while another file fills the disk the outbox can still write into the room its
log already holds, and once space returns the next write checkpoints and everything goes on.

A full disk is the outbox's to survive, the broker down meanwhile included: while the disk has room it keeps
a reserve beside the database (`<outbox>.reserve`, a quarter of the filesystem, at most 1 MiB), and the first
write the full disk refuses gives it back and is tried again. The events of a full-disk outage, their ends
and the acknowledgements that delete them then fit: about one event of 1 KB per KiB of reserve (measured on
tmpfs: 507 events on a 2 MB state disk, 1,013 with the whole 1 MiB). The reserve is set aside again once the
disk has twice its room.
The same database keeps the live settings (detect on/off, threshold multipliers) across restarts.
"""

import json
import logging
import os
import shutil
import sqlite3
import time
import threading
from dataclasses import dataclass
from pathlib import Path

from vad_edge.agent.events import anomaly_of
from vad_edge.agent.spill import Spill

log = logging.getLogger("vad_edge.outbox")

WAL_CHECKPOINT_PAGES = 64  # 256 KiB of 4 KiB pages: a dozen events between checkpoints
WAL_KEEP_BYTES = 512 * 1024  # a WAL larger than this (a burst in one transaction) is cut back to it
DEFAULT_MAX_BYTES = 64 * 2**20
TRIM_STEP = 16  # events dropped at a time while the database is over max_bytes
RESERVE_MAX, RESERVE_SHARE = 2**20, 4  # the reserve: at most 1 MiB, at most a quarter of the state disk


class StorageError(OSError):
    """The outbox database cannot be written (disk full, I/O error); the message names the file."""


@dataclass(frozen=True)
class Pending:
    seq: int
    topic: str
    event: dict


def _open_event(record: str) -> Pending:
    """An `open/<camera>` record read back: {"topic": ..., "event": {event_id, camera, frame_time, seq, ...}}.
    ValueError naming what is wrong with it."""
    parsed = json.loads(record)  # JSONDecodeError is a ValueError
    event = parsed.get("event") if isinstance(parsed, dict) else None
    if not isinstance(event, dict) or not isinstance(parsed.get("topic"), str):
        raise ValueError("expected an object with a topic and an event")
    for key, kind in (("event_id", str), ("camera", str), ("frame_time", str), ("seq", int)):
        if not isinstance(event.get(key), kind):
            raise ValueError(f"its event has no {key}")
    return Pending(event["seq"], parsed["topic"], event)


def _records(open_record: str, end_id: str) -> bool:
    """The open record is of the anomaly this end ended (an unreadable one is not: open_events() names it)."""
    try:
        return anomaly_of(_open_event(open_record).event["event_id"]) == anomaly_of(end_id)
    except ValueError:
        return False


def default_max_bytes(state_dir: Path) -> int:
    """A quarter of the state filesystem, at most DEFAULT_MAX_BYTES: the rest is for the log, the
    calibration bundles and whatever else shares the partition."""
    return min(DEFAULT_MAX_BYTES, shutil.disk_usage(state_dir).total // 4)


class Outbox:
    def __init__(self, path: Path, max_events: int = 10000, max_bytes: int = DEFAULT_MAX_BYTES):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.reserve = path.with_name(path.name + ".reserve")
        self.reserve_bytes = min(RESERVE_MAX, shutil.disk_usage(path.parent).total // RESERVE_SHARE)
        self._disk_warned = False
        self._lock = threading.Lock()
        try:
            self._open_in_room()
        except sqlite3.OperationalError as exc:  # locked by another process, unreadable, ...
            why = ("the state disk is full: free space there" if shutil.disk_usage(path.parent).free < self.reserve_bytes
                   else "is another vad-edge running with this state_dir?")
            raise StorageError(f"{path}: cannot open the outbox ({exc}); {why}") from exc
        except sqlite3.DatabaseError as exc:  # not a database, or a malformed one: keep it, start afresh
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            self._db.close()
            for file in self._files():
                os.replace(file, f"{aside}{file.name[len(path.name):]}")
            log.error("OUTBOX CORRUPT: %s (%s) was moved to %s for inspection; a new, empty outbox starts now. "
                      "Events still pending in it were not sent, and the event seq starts again at 1.",
                      path, exc, aside)
            self._open()
        self._keep_reserve()

    def _open_in_room(self) -> None:
        """Opens the database; on a full disk (SQLite creates its WAL and shared-memory files at the open,
        which a clean stop removed) with the reserve given back."""
        try:
            self._open()
        except sqlite3.OperationalError:
            self._db.close()
            if shutil.disk_usage(self.path.parent).free >= self.reserve_bytes or not self._give_back_reserve():
                raise  # not for want of room (locked, unreadable), or no reserve left to give
            self._open()

    def _keep_reserve(self) -> None:
        """Sets the reserve aside (again) when the disk has room for it twice over; quietly not otherwise."""
        if self.reserve.exists() or shutil.disk_usage(self.path.parent).free < 2 * self.reserve_bytes:
            return
        partial = self.reserve.with_name(self.reserve.name + ".part")
        try:
            with open(partial, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, self.reserve_bytes)
                os.fsync(f.fileno())
            os.chmod(partial, 0o600)
            partial.replace(self.reserve)
        except OSError:
            partial.unlink(missing_ok=True)

    def _give_back_reserve(self) -> bool:
        """Frees the reserve for the write a full disk refused; False when it was given back already."""
        try:
            self.reserve.unlink()
        except FileNotFoundError:
            return False
        log.warning("the state disk is full: the outbox gave back its %d KiB reserve to go on storing events "
                    "(free space on %s; it is set aside again once there is room)", self.reserve_bytes // 1024,
                    self.path.parent)
        return True

    def disk_warning(self) -> str | None:
        """What a full state disk puts at risk while events still go out, or None; logged once each time the
        disk fills."""
        free = shutil.disk_usage(self.path.parent).free
        if free >= self.reserve_bytes:
            self._disk_warned = False
            return None
        warning = (f"the state disk {self.path.parent} has {free // 1024} KiB free: events go out now, but a broker "
                   f"outage would be stored only in the outbox's reserve "
                   f"({'given back already' if not self.reserve.exists() else f'{self.reserve_bytes // 1024} KiB'})"
                   f"; free space there")
        if not self._disk_warned:
            self._disk_warned = True
            log.warning("%s", warning)
        return warning

    def _write(self, what: str, work):
        """Runs `work()` (a write) under the lock and returns what it returns. SQLite's failures come out as a
        StorageError naming the file and what was being done; a full disk first gets the reserve back and
        the write is tried once more."""
        for attempt in (1, 2):
            try:
                with self._lock:
                    return work()
            except sqlite3.Error as exc:
                full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)
                if attempt == 1 and full and self._give_back_reserve():
                    continue
                raise StorageError(f"{self.path}: cannot {what} ({exc})") from exc

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=2)
        self._db.execute("PRAGMA journal_mode=WAL")
        for file in self._files():  # events and settings are the agent's alone (older builds: 0644)
            file.chmod(0o600)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
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

    def add(self, topic: str, event: dict) -> Pending:
        """Assigns the next seq, commits the event (fsynced) and returns it; trims the oldest when full.
        StorageError when it cannot be written: nothing is stored then, not even the seq."""
        stored = self._write("store an event", lambda: self._add(topic, event))
        self._keep_reserve()
        return stored

    def _add(self, topic: str, event: dict) -> Pending:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            stored = self._insert(topic, event)
            self._trim()
        return stored

    def _insert(self, topic: str, event: dict) -> Pending:
        """Inside a transaction: the event with the next seq, and its camera's open record."""
        seq = int(self._db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0]) + 1
        event = {**event, "seq": seq}
        self._db.execute("UPDATE meta SET value=? WHERE key='seq'", (str(seq),))
        self._db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                         (seq, event["event_id"], event["type"], topic, json.dumps(event)))
        # The camera's running event, in the same transaction: a start after a crash can end it.
        key = f"open/{event['camera']}"
        if event["type"] == "end":
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))
        elif event["type"] in ("start", "update"):  # a tamper is no anomaly: it never leaves one open
            self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (key, json.dumps({"topic": topic, "event": event})))
        return Pending(seq, topic, event)

    def restore(self, spill: Spill) -> list[Pending]:
        """Applies what the last stop kept outside (spill.py) in one transaction: deletes the events the broker
        had acknowledged, closes the open records of the events whose end went out from memory, stores the
        events kept unsent (returned, to be sent) and records the spill's id. StorageError when it cannot."""
        return self._write("store what the last stop kept", lambda: self._restore(spill))

    def _restore(self, spill: Spill) -> list[Pending]:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM events WHERE seq=? AND event_id=?", spill.delivered)
            for camera, end_id in spill.ended:  # only while the record is still of that event
                record = self._db.execute("SELECT value FROM meta WHERE key=?", (f"open/{camera}",)).fetchone()
                if record and _records(record[0], end_id):
                    self._db.execute("DELETE FROM meta WHERE key=?", (f"open/{camera}",))
            stored = [self._insert(topic, event) for topic, event in spill.unsent
                      if not self._db.execute("SELECT 1 FROM events WHERE event_id=?", (event["event_id"],)).fetchone()]
            self._db.execute("INSERT INTO meta VALUES ('restored', ?) ON CONFLICT(key) DO UPDATE SET "
                             "value=excluded.value", (spill.id,))
            self._trim()
        return stored

    def restored(self, spill: Spill) -> bool:
        """This spill was applied already (a start that died before it could remove the file)."""
        return self.get("restored") == spill.id

    def _trim(self) -> None:
        """Drops the oldest events, updates first, while more than max_events are stored or the database's
        pages in use (events, settings, indexes: what it takes of the disk) exceed max_bytes."""
        excess = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0] - self.max_events
        if excess > 0:
            self._drop_oldest(excess)
        while self._used_bytes() > self.max_bytes and self._drop_oldest(TRIM_STEP):
            pass

    def _drop_oldest(self, count: int) -> int:
        """Deletes the `count` oldest events, updates before the others; returns how many it deleted."""
        dropped = 0
        for kind_filter in ("WHERE type='update'", ""):
            rows = self._db.execute(f"SELECT seq FROM events {kind_filter} ORDER BY seq LIMIT ?",
                                    (count - dropped,)).fetchall()
            self._db.executemany("DELETE FROM events WHERE seq=?", rows)
            dropped += len(rows)
            if dropped == count:
                break
        self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped'", (dropped,))
        return dropped

    def _used_bytes(self) -> int:
        page_size, pages, free = (self._db.execute(f"PRAGMA {name}").fetchone()[0]
                                  for name in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page_size

    def ack(self, seq: int, event_id: str) -> None:
        """Deletes an acknowledged event; the id guards against a seq of another outbox (one set aside as corrupt)."""
        self._write("delete an acknowledged event", lambda: self._db.execute(
            "DELETE FROM events WHERE seq=? AND event_id=?", (seq, event_id)))

    def pending(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload FROM events ORDER BY seq").fetchall()
        return [Pending(seq, topic, json.loads(payload)) for seq, topic, payload in rows]

    def open_events(self) -> list[Pending]:
        """The last stored event of each camera whose anomaly had not ended when the agent last stopped. A
        record that cannot be read is ignored by name, as a bad saved setting is: the agent still starts."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'open/%' ORDER BY key").fetchall()
        found = []
        for key, value in rows:
            try:
                found.append(_open_event(value))
            except ValueError as exc:
                log.warning("outbox record %s ignored: it is not an event left open (%s); no end is sent for it",
                            key, exc)
        return found

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def dropped(self) -> int:
        return int(self.get("dropped", "0"))

    def disk_usage(self) -> dict:
        """What the outbox's files take of the state disk now, its log (the WAL) among them, and what the
        disk has left."""
        sizes = {file.name[len(self.path.name):]: file.stat().st_size for file in self._files()}
        return {"bytes": sum(sizes.values()), "wal_bytes": sizes.get("-wal", 0),
                "limit_bytes": self.max_bytes, "disk_free_bytes": shutil.disk_usage(self.path.parent).free,
                "reserve_bytes": self.reserve_bytes if self.reserve.exists() else 0}

    def get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def put(self, key: str, value: str) -> None:
        self._write(f"save setting {key}", lambda: self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)))

    def close(self) -> None:
        with self._lock:
            self._db.close()
