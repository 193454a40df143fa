"""What the two rings share (how long they keep, what events hold), what a clip is once cut, and how its
file is written so that it is whole whenever it exists."""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av


class ClipError(RuntimeError):
    """A clip that could not be cut or written; the message says why."""


class Ring:
    """Keeps a camera's last `keep` seconds, and longer what a running event holds (from its pre-roll on, at
    most `max_hold` seconds back). Subclasses keep the material (packets.py, frames.py) under `_lock`."""

    def __init__(self, keep: float, max_hold: float, reason: str):
        self.keep, self.max_hold, self.reason = keep, max_hold, reason
        self.received = 0  # packets or frames kept since the start
        self._holds: dict[str, float] = {}  # who holds, from when
        self._lock = threading.Lock()
        self._last_arrival = time.monotonic()

    def hold(self, holder: str, since: float) -> None:
        """Keeps what comes from `since` on until release(holder): a running event's clip."""
        with self._lock:
            self._holds[holder] = since

    def release(self, holder: str) -> None:
        with self._lock:
            self._holds.pop(holder, None)

    def idle(self) -> float:
        """Seconds since the last packet or frame came (or since the ring was made)."""
        return time.monotonic() - self._last_arrival

    def _arrived(self) -> None:
        self.received += 1
        self._last_arrival = time.monotonic()

    def _horizon(self, newest: float) -> float:
        """What is older than this may go (under _lock): `keep` seconds back, or the oldest hold."""
        horizon = newest - self.keep
        if self._holds:
            horizon = min(horizon, max(min(self._holds.values()), newest - self.max_hold))
        return horizon


@dataclass(frozen=True)
class Cut:
    """A clip: its first and last frame's wall-clock (or media) times, frames, bytes, size, how it was made,
    and how long before the asked start it starts (a clip copied from a stream starts at a keyframe)."""

    path: Path
    start: float
    end: float
    frames: int
    bytes: int
    started_early: float
    width: int
    height: int
    made: str

    def metadata(self) -> dict:
        return {"file": self.path.name, "duration": round(self.end - self.start, 3), "bytes": self.bytes,
                "frames": self.frames, "width": self.width, "height": self.height, "made": self.made,
                "started_early": round(self.started_early, 3)}


def write_mp4(path: Path, write: Callable[[av.container.OutputContainer], None]) -> int:
    """Writes an MP4 with `write(output)` under a temporary name, syncs it and renames it to `path`, so that a
    file under `path` is always whole; returns its size. ClipError when FFmpeg or the disk fails."""
    partial = path.with_name(path.name + ".part")
    try:
        with av.open(str(partial), "w", format="mp4") as output:
            write(output)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        partial.rename(path)
        return path.stat().st_size
    except (av.error.FFmpegError, OSError, ValueError, ClipError) as exc:
        partial.unlink(missing_ok=True)
        raise ClipError(f"writing {path.name} failed: {exc}") from exc
