"""A network camera's encoded stream kept for the last seconds, and clips cut from it without re-encoding.

A PacketRing demuxes the camera's stream on a connection of its own (PyAV, FFmpeg's binding: OpenCV does not
hand over packets) and keeps its video packets, never decoding them, for `keep` seconds plus the keyframe
before; longer while a running event holds them from its pre-roll on (`hold`), at most `max_hold` seconds.
Each packet's frame gets a wall-clock time, the clock the agent stamps a stream's frames with, so that an
event's times select its packets: its presentation time plus the stream's offset to the wall clock, the
smallest (arrival - presentation time) seen so far on that connection. The least delayed packet gives it:
FFmpeg reads seconds of the stream before the first packet comes out (to learn its format), so those arrive
in a burst, late. A reconnection starts a new segment with its own clock and codec parameters, and a clip
never spans two.

A clip must start at a keyframe: it starts at the last keyframe at or before the asked start, so it is as long as asked or longer (when keyframes are further apart than the pre-roll it starts up
to one keyframe interval earlier, and says so: `started_early`).
"""

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from vad_edge.data.sources import mask_password

log = logging.getLogger("vad_edge.clips")

REMUXABLE = ("h264", "hevc")  # what a clip copies as it came; other codecs are not cut from packets


class ClipError(RuntimeError):
    """A clip that could not be cut or written; the message says why."""


@dataclass(frozen=True)
class Packet:
    data: bytes
    pts: int
    dts: int
    keyframe: bool
    seconds: float  # its presentation time in seconds (the stream's clock)
    segment: int  # the connection it came on


@dataclass(frozen=True)
class Cut:
    """What a clip holds: its first and last frame's wall-clock times, frames, bytes, and how long before the
    asked start it starts because the keyframe before it was further back."""

    path: Path
    start: float
    end: float
    frames: int
    bytes: int
    started_early: float  # seconds before the asked start (0 when a keyframe fell on it)
    width: int
    height: int
    codec: str

    def metadata(self) -> dict:
        return {"file": self.path.name, "duration": round(self.end - self.start, 3), "bytes": self.bytes,
                "frames": self.frames, "width": self.width, "height": self.height,
                "made": f"copied from the camera's {self.codec} stream (not re-encoded)",
                "started_early": round(self.started_early, 3)}


class PacketRing(threading.Thread):
    """Keeps a stream's video packets for `keep` seconds (and the keyframe before them), on its own
    connection and thread; reconnects with back-off when the stream fails."""

    def __init__(self, url: str, keep: float, max_hold: float = 600.0, timeout: float = 5.0,
                 clock: Callable[[], float] = time.time, backoff_max: float = 30.0):
        super().__init__(name=f"clip ring of {mask_password(url)}", daemon=True)
        self.url, self.keep, self.max_hold, self.timeout = url, keep, max_hold, timeout
        self.clock, self.backoff_max = clock, backoff_max
        self._packets: deque[Packet] = deque()
        self._holds: dict[str, float] = {}  # who holds packets, from when
        # Per segment (connection): wall-clock time minus the stream's clock (the smallest seen), and the
        # stream, whose codec parameters and time base its clips are written with.
        self._offsets: dict[int, float] = {}
        self._streams: dict[int, av.video.stream.VideoStream] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.reason = "not connected yet"
        self.received = 0  # packets kept since the start

    def stop(self) -> None:
        self._stopping.set()

    def hold(self, holder: str, since: float) -> None:
        """Keeps the packets from `since` on (wall-clock) until release(holder): a running event's clip."""
        with self._lock:
            self._holds[holder] = since

    def release(self, holder: str) -> None:
        with self._lock:
            self._holds.pop(holder, None)

    def run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                self._read()
                backoff = 1.0
            except (av.error.FFmpegError, OSError, ClipError) as exc:
                # FFmpeg's messages name the URL, password and all: the reason is logged and published.
                self.reason = mask_password(f"{type(exc).__name__}: {exc}")
                log.info("%s: %s; reconnecting", self.name, self.reason)
            if self._stopping.wait(backoff):
                return
            backoff = min(2 * backoff, self.backoff_max)

    def _read(self) -> None:
        options = {"rtsp_transport": "tcp"} if self.url.startswith("rtsp") else {}
        # Not closed here: a clip may still be cut from this connection's packets after it ends, and its
        # stream (the codec parameters a clip is written with) lives as long as its container. Each segment
        # holds its stream, the stream its container; both go when the ring lets the segment go.
        container = av.open(self.url, options=options, timeout=self.timeout)
        if not container.streams.video:
            container.close()
            raise ClipError("the stream has no video")
        stream = container.streams.video[0]
        if stream.codec_context.name not in REMUXABLE:
            container.close()
            raise ClipError(f"the stream is {stream.codec_context.name}, not one of {', '.join(REMUXABLE)}")
        with self._lock:
            segment = max(self._streams, default=-1) + 1
            self._offsets[segment], self._streams[segment] = float("inf"), stream
        self.reason = "receiving"
        for packet in container.demux(stream):
            if self._stopping.is_set():
                return
            if packet.pts is None or packet.size == 0:
                continue
            dts = packet.dts if packet.dts is not None else packet.pts
            self._keep(Packet(bytes(packet), packet.pts, dts, packet.is_keyframe,
                              float(packet.pts * stream.time_base), segment), self.clock())
        raise ClipError("the stream ended")

    def _keep(self, packet: Packet, arrival: float) -> None:
        with self._lock:
            self._offsets[packet.segment] = min(self._offsets[packet.segment], arrival - packet.seconds)
            self._packets.append(packet)
            self.received += 1
            # Drop what is older than `keep` and no event holds, but not the newest keyframe at or before that
            # horizon: a clip that starts at the horizon starts there.
            newest = self._wall(packet)
            horizon = newest - self.keep
            if self._holds:
                horizon = min(horizon, max(min(self._holds.values()), newest - self.max_hold))
            needed = [i for i, p in enumerate(self._packets) if p.keyframe and self._wall(p) <= horizon]
            for _ in range(needed[-1] if needed else 0):
                self._packets.popleft()
            for gone in [k for k in self._streams if k < self._packets[0].segment]:
                del self._streams[gone], self._offsets[gone]

    def _wall(self, packet: Packet) -> float:
        return packet.seconds + self._offsets[packet.segment]

    def latest(self) -> float | None:
        """The wall-clock time of the newest frame kept, or None."""
        with self._lock:
            return self._wall(self._packets[-1]) if self._packets else None

    def cut(self, start: float, end: float, path: Path) -> Cut:
        """Writes the frames from the last keyframe at or before `start` to `end` (wall-clock times) into an
        MP4 at `path`, as they came, within one connection; raises ClipError when the ring holds none."""
        with self._lock:
            packets, streams = list(self._packets), dict(self._streams)
            walls = [self._wall(p) for p in packets]
        if not packets:
            raise ClipError(f"no packets kept ({self.reason})")
        first = max((i for i, p in enumerate(packets) if p.keyframe and walls[i] <= start), default=None)
        if first is None:
            first = next((i for i, p in enumerate(packets) if p.keyframe), None)
            if first is None or walls[first] > end:
                raise ClipError(f"no keyframe kept before {end:.3f} (the ring holds {walls[0]:.3f} to "
                                f"{walls[-1]:.3f})")
        segment = packets[first].segment  # a clip ends where its connection did
        last = max(i for i in range(first, len(packets))
                   if i == first or (walls[i] <= end and packets[i].segment == segment))
        return _write(path, packets[first:last + 1], (walls[first], walls[last]), streams[segment], start)


def _write(path: Path, packets: list[Packet], walls: tuple[float, float], template: av.video.stream.VideoStream,
           asked_start: float) -> Cut:
    """Remuxes the packets into an MP4, timestamps from 0; written to a temporary name, synced and renamed
    when complete, so that a file under `path` is always whole."""
    partial = path.with_name(path.name + ".part")
    base_dts = min(p.dts for p in packets)
    try:
        with av.open(str(partial), "w", format="mp4") as output:
            stream = output.add_stream_from_template(template)
            for kept in packets:
                packet = av.Packet(kept.data)
                packet.stream = stream
                packet.time_base = template.time_base
                packet.pts, packet.dts = kept.pts - base_dts, kept.dts - base_dts
                packet.is_keyframe = kept.keyframe
                output.mux(packet)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        partial.rename(path)
    except (av.error.FFmpegError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ClipError(f"writing {path.name} failed: {exc}") from exc
    return Cut(path, walls[0], walls[1], len(packets), path.stat().st_size, max(0.0, asked_start - walls[0]),
               template.codec_context.width, template.codec_context.height, template.codec_context.name)
