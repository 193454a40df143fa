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

A clip must start at a keyframe: it starts at the last keyframe at or before the asked start, so it is as
long as asked or longer (when keyframes are further apart than the pre-roll it starts up to one keyframe
interval earlier, and says so: `started_early`).
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from vad_edge.agent.clips.cut import ClipError, Cut, Ring, write_mp4
from vad_edge.data.sources import mask_password

log = logging.getLogger("vad_edge.clips")

REMUXABLE = ("h264", "hevc")  # what a clip copies as it came; other codecs are not cut from packets


@dataclass(frozen=True)
class Packet:
    data: bytes
    pts: int
    dts: int
    keyframe: bool
    seconds: float  # its presentation time in seconds (the stream's clock)
    segment: int  # the connection it came on


class PacketRing(Ring, threading.Thread):
    """Keeps a stream's video packets for `keep` seconds (and the keyframe before them), on its own
    connection and thread; reconnects with back-off when the stream fails."""

    def __init__(self, url: str, keep: float, max_hold: float = 600.0, timeout: float = 5.0,
                 clock: Callable[[], float] = time.time, backoff_max: float = 30.0):
        Ring.__init__(self, keep, max_hold, "not connected yet")
        threading.Thread.__init__(self, name=f"clip ring of {mask_password(url)}", daemon=True)
        self.url, self.timeout, self.clock, self.backoff_max = url, timeout, clock, backoff_max
        self._packets: deque[Packet] = deque()
        # Per segment (connection): wall-clock time minus the stream's clock (the smallest seen), and the
        # stream, whose codec parameters and time base its clips are written with.
        self._offsets: dict[int, float] = {}
        self._streams: dict[int, av.video.stream.VideoStream] = {}
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

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
            self._arrived()
            # Drop what is older than `keep` and no event holds, but not the newest keyframe at or before that
            # horizon: a clip that starts at the horizon starts there.
            horizon = self._horizon(self._wall(packet))
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
    """Remuxes the packets into an MP4, timestamps from 0."""
    base_dts = min(p.dts for p in packets)

    def remux(output) -> None:
        stream = output.add_stream_from_template(template)
        for kept in packets:
            packet = av.Packet(kept.data)
            packet.stream = stream
            packet.time_base = template.time_base
            packet.pts, packet.dts = kept.pts - base_dts, kept.dts - base_dts
            packet.is_keyframe = kept.keyframe
            output.mux(packet)

    size = write_mp4(path, remux)
    codec = template.codec_context
    return Cut(path, walls[0], walls[1], len(packets), size, max(0.0, asked_start - walls[0]), codec.width,
               codec.height, f"copied from the camera's {codec.name} stream (not re-encoded)")
