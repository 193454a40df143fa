"""What one camera's reader hands the scoring loop: clips, and status changes in their order with them.

A live camera (a stream, or a file played in real time) never waits for the loop: when scoring falls
behind, the oldest waiting clip is skipped whole and counted, so the box scores the newest complete window
and never a clip with frames missing inside it. A file played as fast as it is scored waits for room
instead and loses nothing. Status changes are never dropped, and come out after the clips read before them:
a file's last clips are scored before its end closes the event.
"""

import threading
from collections import deque
from dataclasses import dataclass

from vad_edge.agent.camera_reader import Clip

LIVE_CLIPS = 2  # waiting clips of a live camera: a little slack for jitter, at most 0.2 s late at 10 fps
FILE_CLIPS = 8


@dataclass(frozen=True)
class StatusChange:
    status: str
    reason: str


class ClipInbox:
    def __init__(self, live: bool):
        self.live = live
        self.capacity = LIVE_CLIPS if live else FILE_CLIPS
        self.skipped = 0  # clips never scored because newer ones replaced them
        self._items: deque[Clip | StatusChange] = deque()
        self._clips = 0
        self._room = threading.Condition()

    def put_clip(self, clip: Clip, stop: threading.Event) -> int:
        """Adds a clip; returns how many older clips it pushed out (live), after waiting for room (file)."""
        with self._room:
            if not self.live:
                while self._clips >= self.capacity and not stop.is_set():
                    self._room.wait(0.2)
                if stop.is_set():
                    return 0
            skipped = 0
            while self._clips >= self.capacity:
                oldest = next(i for i, item in enumerate(self._items) if not isinstance(item, StatusChange))
                del self._items[oldest]
                self._clips -= 1
                skipped += 1
            self._items.append(clip)
            self._clips += 1
            self.skipped += skipped
            return skipped

    def put_status(self, status: str, reason: str) -> None:
        with self._room:
            self._items.append(StatusChange(status, reason))

    def get(self) -> Clip | StatusChange | None:
        with self._room:
            if not self._items:
                return None
            item = self._items.popleft()
            if not isinstance(item, StatusChange):
                self._clips -= 1
                self._room.notify()
            return item

    def empty(self) -> bool:
        with self._room:
            return not self._items
