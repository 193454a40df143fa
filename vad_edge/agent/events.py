"""The event state machine of one camera, and the event JSON (schema vad-edge.event/1).

A calibrated score above 1.0 for min_event_frames consecutive frames starts an event; while the peak keeps
rising an `update` goes out at most once a second; cooldown seconds below 1.0 end it.

All times of one camera's events come from its frames' own timeline (media time for files, capture time
for streams): `start_time` is the first frame above the threshold, `end_time` the last, and an event closed
early (the camera went offline, detection was switched off, the agent stops) ends at the last frame seen.
Events of one camera never overlap.
"""

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np

from vad_edge.model.zones import ZoneMap

SCHEMA = "vad-edge.event/1"


def anomaly_of(event_id: str) -> str:
    """An anomaly's id from one of its messages' ids ("<uuid>:start", "<uuid>:update:3", "<uuid>:end")."""
    return event_id.split(":")[0]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hot_pixels(emap: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The pixels at or above `fraction` of the map's maximum (all of them for a map of zeros)."""
    return emap >= fraction * float(emap.max()) if float(emap.max()) > 0 else np.ones(emap.shape, bool)


def hot_region(emap: np.ndarray, fraction: float = 0.5) -> dict:
    """Bounding box, in 0..1 of the frame, of the hot pixels."""
    if float(emap.max()) <= 0:
        return {"x": 0.0, "y": 0.0, "w": 1.0, "h": 1.0}
    ys, xs = np.nonzero(hot_pixels(emap, fraction))
    h, w = emap.shape
    return {"x": round(xs.min() / w, 4), "y": round(ys.min() / h, 4),
            "w": round((xs.max() + 1 - xs.min()) / w, 4), "h": round((ys.max() + 1 - ys.min()) / h, 4)}


@dataclass
class Observation:
    time: float  # the frame's time, seconds since the epoch
    score: float  # calibrated: 1.0 = threshold
    raw_score: float
    threshold: float  # raw-score threshold in force (calibrated threshold x multiplier)
    emap: np.ndarray  # localisation map of the frame
    frame: np.ndarray | None = None  # the frame (BGR), kept for the snapshot of the peak


@dataclass
class EventTracker:
    device_id: str
    camera: str
    min_event_frames: int
    cooldown: float
    model: dict  # {name, sha256}
    calibration: dict  # {id, created}
    update_interval: float = 1.0
    zones: ZoneMap | None = None  # the camera's: each event names the zones its peak's hot pixels reach
    active: dict | None = field(default=None, init=False)  # the running event's fields
    peak: Observation | None = field(default=None, init=False)
    _above: list = field(default_factory=list, init=False)
    _below_since: float | None = field(default=None, init=False)
    _last_above: float = field(default=0.0, init=False)
    _last: Observation | None = field(default=None, init=False)  # the latest frame seen
    _last_update: float = field(default=0.0, init=False)
    _peak_at_update: float = field(default=0.0, init=False)

    def step(self, obs: Observation) -> list[dict]:
        """Feeds one scored frame; returns the events it causes (start / update / end), in order."""
        if self._last is not None and obs.time < self._last.time:
            # The frame clock went back (a wall-clock step on a stream): hold it, so no event ends
            # before it starts and the next one never begins before the last one ended.
            obs = replace(obs, time=self._last.time)
        self._last = obs
        above = obs.score > 1.0
        if above:
            self._last_above = obs.time
        if self.active is None:
            self._above = self._above + [obs] if above else []
            if len(self._above) < self.min_event_frames:
                return []
            first = self._above[0]
            self.peak = max(self._above, key=lambda o: o.score)
            self._above = []
            self.active = {"event_id": str(uuid.uuid4()), "start_time": iso(first.time), "updates": 0}
            self._below_since, self._last_update, self._peak_at_update = None, obs.time, self.peak.score
            return [self._event("start", obs)]
        if above:
            self._below_since = None
            if obs.score > self.peak.score:
                self.peak = obs
            if self.peak.score > self._peak_at_update and obs.time - self._last_update >= self.update_interval:
                self._last_update, self._peak_at_update = obs.time, self.peak.score
                self.active["updates"] += 1
                return [self._event("update", obs)]
            return []
        if self._below_since is None:
            self._below_since = obs.time
        if obs.time - self._below_since >= self.cooldown:
            event = self._event("end", obs, end_time=iso(self._last_above))
            self.active, self.peak = None, None
            return [event]
        return []

    def _event(self, kind: str, obs: Observation, end_time: str | None = None) -> dict:
        peak = self.peak
        return {
            "schema": SCHEMA,
            # Unique per message and stable across retries (subscribers deduplicate on it); the common
            # prefix ties the start, updates and end of one anomaly together.
            "event_id": f"{self.active['event_id']}:{kind}" + (f":{self.active['updates']}" if kind == "update" else ""),
            "seq": None,  # assigned by the outbox
            "type": kind,
            "device_id": self.device_id,
            "camera": self.camera,
            "start_time": self.active["start_time"],
            "end_time": end_time,
            "frame_time": iso(obs.time),
            "score": round(obs.score, 4),
            "peak_score": round(peak.score, 4),
            "raw_score": obs.raw_score,
            "threshold": obs.threshold,
            "region": hot_region(peak.emap),
            "zones": self.zones.touched(hot_pixels(peak.emap)) if self.zones else [],
            "model": self.model,
            "calibration": self.calibration,
            "replayed": False,
        }

    @staticmethod
    def interrupted(last: dict, reason: str) -> dict:
        """The end of an event the agent could not end itself (it was killed): at its last known frame."""
        return {**last, "event_id": f"{anomaly_of(last['event_id'])}:end", "seq": None, "type": "end",
                "end_time": last["frame_time"], "replayed": False, "reason": reason}

    def close(self) -> list[dict]:
        """Ends a running event at the last frame seen (the camera went offline, detection was switched off,
        the agent stops); frames above the threshold that had not yet started an event are forgotten."""
        self._above = []
        if self.active is None:
            return []
        event = self._event("end", self._last, end_time=iso(self._last_above))
        self.active, self.peak = None, None
        return [event]


TAMPER_SCHEMA = "vad-edge.tamper/1"


def tamper_event(device_id: str, camera: str, tamper_id: str, change: dict, t: float) -> dict:
    """A tamper start or end (model/tamper.py's change: state, reason, detail) at the frame time `t`; start
    and end share `tamper_id`, as an anomaly's messages share theirs."""
    return {"schema": TAMPER_SCHEMA, "event_id": f"{tamper_id}:{change['state']}", "seq": None, "type": "tamper",
            "state": change["state"], "reason": change["reason"], "detail": change.get("detail"),
            "device_id": device_id, "camera": camera, "time": iso(t), "replayed": False}
