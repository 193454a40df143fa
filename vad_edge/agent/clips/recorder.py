"""Which event gets which clip, and when its end may go out.

Each camera with clips on has a ring: an RTSP camera a PacketRing (packets.py: its own stream, copied), any
other a FrameRing (frames.py: the agent's frames, encoded). When an event starts, the ring holds from the
pre-roll on; when it ends, the clip is cut once the ring has the post-roll (or the stream stalled,
or the agent stops), on a thread of its own, and stored (store.py). The agent holds the event's `end` until
then and publishes it with the clip's name, so that whoever receives the end can fetch a file that is whole.
A clip that could not be cut is said in the end event (`clip.error`); the end goes out either way.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vad_edge.agent.clips.cut import ClipError
from vad_edge.agent.clips.frames import FrameRing
from vad_edge.agent.clips.packets import PacketRing
from vad_edge.agent.clips.store import ClipStore
from vad_edge.agent.events import iso
from vad_edge.config import Camera, Clips
from vad_edge.data.sources import Frame

log = logging.getLogger("vad_edge.clips")

STREAMS = ("rtsp://", "rtsps://")  # sources whose own encoded stream a PacketRing keeps


def seconds(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


@dataclass
class Job:
    camera: str
    event_id: str  # the event's id, without its :start/:end suffix
    start: float  # the camera's timeline: the first frame above the threshold less the pre-roll
    end: float | None = None  # the last frame above it plus the post-roll, once the event ended
    clip: dict | None = None  # what the end event says of its clip, once cut (or why not)


class ClipRecorder:
    def __init__(self, cameras: list[Camera], clips: Clips, store: ClipStore, stall: float = 5.0,
                 clock: Callable[[], float] = time.time):
        self.store, self.stall = store, stall
        self.settings = {cam.name: cam.clip for cam in cameras if cam.clip.enabled}
        keep = {name: clip.pre_roll + 2.0 for name, clip in self.settings.items()}  # and a keyframe interval
        self.rings: dict[str, PacketRing | FrameRing] = {
            cam.name: PacketRing(cam.source, keep[cam.name], clips.max_seconds, clock=clock)
            if cam.source.startswith(STREAMS) else FrameRing(keep[cam.name], clips.max_seconds)
            for cam in cameras if cam.clip.enabled}
        self.failed = 0  # clips that could not be cut or written
        self._jobs: dict[str, Job] = {}  # by event id, from start to its clip
        self._lock = threading.Condition()
        self._stopping = False
        self._writer = threading.Thread(target=self._write_loop, name="clip-writer", daemon=True)

    def start(self) -> None:
        for ring in self.rings.values():
            ring.start()
        self._writer.start()

    def push(self, camera: str, frame: Frame) -> None:
        """A camera's newest frame, for the clips of a camera whose own stream cannot be copied."""
        ring = self.rings.get(camera)
        if isinstance(ring, FrameRing):
            ring.push(frame.time, frame.full)

    def started(self, event: dict) -> None:
        """An event started: its camera's ring holds the stream from its pre-roll on."""
        camera = event["camera"]
        ring = self.rings.get(camera)
        if ring is None:
            return
        event_id = event["event_id"].split(":")[0]
        start = seconds(event["start_time"]) - self.settings[camera].pre_roll
        ring.hold(event_id, start)
        with self._lock:
            self._jobs[event_id] = Job(camera, event_id, start)

    def ended(self, event: dict) -> bool:
        """An event ended: True when its clip is being made (the end waits for it: done() hands it back),
        False when the end may go out now (with what it says of its clip, if anything, added)."""
        camera, event_id = event["camera"], event["event_id"].split(":")[0]
        if camera not in self.rings:
            return False
        with self._lock:
            job = self._jobs.get(event_id)
            if job is None:  # not seen starting (clips were switched on meanwhile): nothing to cut from
                event["clip"] = {"error": "the event started before the clip could"}
                return False
            try:
                job.end = seconds(event["end_time"]) + self.settings[camera].post_roll
            except (KeyError, TypeError, ValueError):  # no clip will come: the ring need not hold for it
                del self._jobs[event_id]
                self.rings[camera].release(event_id)
                raise
            self._lock.notify_all()
        return True

    def done(self) -> dict[str, dict]:
        """The clips made since the last call, by event id: what each end event says of its clip."""
        with self._lock:
            finished = {k: j for k, j in self._jobs.items() if j.clip is not None}
            for event_id in finished:
                del self._jobs[event_id]
        return {event_id: job.clip for event_id, job in finished.items()}

    def waiting(self) -> int:
        with self._lock:
            return sum(job.end is not None for job in self._jobs.values())

    def close(self, deadline: float) -> dict[str, dict]:
        """At a stop: cuts every ended event's clip with what its ring holds now, until `deadline`
        (monotonic), says why for the rest; stops the rings. Returns what done() would."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._writer.ident is not None:  # started
            self._writer.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for job in self._jobs.values():
                if job.end is not None and job.clip is None:
                    job.clip = {"error": "the agent stopped before the clip was cut"}
        for ring in self.rings.values():
            ring.stop()
        return self.done()

    def _ready(self, job: Job) -> bool:
        """The ring has the job's post-roll, or will not get it (its stream stalled, the agent stops)."""
        ring = self.rings[job.camera]
        latest = ring.latest()
        return self._stopping or ring.idle() > self.stall or (latest is not None and latest >= job.end)

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                job = next((j for j in self._jobs.values() if j.end is not None and j.clip is None and
                            self._ready(j)), None)
                if job is None:
                    if self._stopping:
                        return
                    self._lock.wait(0.1)  # the ring's next packets may make a job ready
                    continue
            job.clip = self._cut(job)  # outside the lock: the loop goes on meanwhile
            self.rings[job.camera].release(job.event_id)

    def _cut(self, job: Job) -> dict:
        path = self.store.path_for(job.event_id)
        try:
            cut = self.rings[job.camera].cut(job.start, job.end, path)
        except (ClipError, OSError) as exc:
            self.failed += 1
            log.warning("camera %s: no clip for event %s: %s", job.camera, job.event_id, exc)
            return {"error": str(exc)}
        self.store.prune(keep=path)
        return {**cut.metadata(), "start_time": iso(cut.start), "end_time": iso(cut.end),
                "url": f"/clips/{path.name}"}
