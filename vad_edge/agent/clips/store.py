"""The event clips on the state disk: one MP4 per event in <state_dir>/clips, within a size and an age.

A clip enters complete (cut.py writes it under a temporary name, syncs it and renames it), so every file the
store sees is whole. After each one enters, and when asked (the agent does every stats interval), the oldest
clips go until the rest fit in `max_bytes` and none is older than `max_age` seconds; the clip that just
entered is never removed by its own entry, so the event that names it can be published with it there. A clip
budget that is full therefore costs old clips, never an event.
"""

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("vad_edge.clips")

NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # an event's id (uuid4)


class ClipStore:
    def __init__(self, directory: Path, max_bytes: int, max_age: float, clock: Callable[[], float] = time.time):
        self.directory, self.max_bytes, self.max_age, self.clock = Path(directory), max_bytes, max_age, clock
        self.directory.mkdir(parents=True, exist_ok=True)
        for partial in self.directory.glob("*.part"):  # a cut the agent did not finish (it was killed)
            partial.unlink(missing_ok=True)
        self.removed = 0  # clips removed to keep the budget, since the start
        self._lock = threading.Lock()  # the writer thread admits, the loop prunes, the health server reads

    def path_for(self, event_id: str) -> Path:
        """Where the clip of an event goes (its id without the :start/:end suffix)."""
        name = event_id.split(":")[0]
        if not NAME.match(name):
            raise ValueError(f"clip store: {event_id!r} is not an event id")
        return self.directory / f"{name}.mp4"

    def find(self, name: str) -> Path | None:
        """The clip called `name` (<event id>.mp4) if it is kept, else None; any other name is None."""
        stem = name.removesuffix(".mp4")
        if name == stem or not NAME.match(stem):
            return None
        path = self.directory / name
        return path if path.is_file() else None

    def clips(self) -> list[tuple[Path, os.stat_result]]:
        """The kept clips, oldest first."""
        found = []
        for path in self.directory.glob("*.mp4"):
            try:
                found.append((path, path.stat()))
            except FileNotFoundError:  # removed meanwhile
                continue
        return sorted(found, key=lambda item: item[1].st_mtime)

    def usage(self) -> tuple[int, int]:
        """(clips kept, their bytes)."""
        kept = self.clips()
        return len(kept), sum(stat.st_size for _, stat in kept)

    def prune(self, keep: Path | None = None) -> list[str]:
        """Removes the oldest clips until the rest fit the budget and none is too old, never `keep`; returns
        the names removed."""
        with self._lock:
            kept = self.clips()
            total = sum(stat.st_size for _, stat in kept)
            removed = []
            for path, stat in kept:
                too_old = self.clock() - stat.st_mtime > self.max_age
                if path == keep or not (too_old or total > self.max_bytes):
                    continue
                path.unlink(missing_ok=True)
                total -= stat.st_size
                removed.append(path.name)
            self.removed += len(removed)
        if removed:
            log.info("clips: removed %d (oldest first) to stay within %.0f MB and %.0f h: %s", len(removed),
                     self.max_bytes / 2**20, self.max_age / 3600, ", ".join(removed))
        return removed
