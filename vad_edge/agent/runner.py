"""The agent's scoring loop: camera readers hand over clips of 5 consecutive frames at the model's frame
rate; one loop takes the newest clip of every camera, scores them in a batch per model, runs each camera's
event state machine, and hands events to the outbox and MQTT. The loop owns every camera's state: commands
(commands.py) and reloads (bundle_loader.py) from other threads are queued and applied here."""

import json
import logging
import math
import queue
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from vad_edge.agent import discovery, preflight, status
from vad_edge.agent.bundle_loader import BundleLoader
from vad_edge.agent.camera_reader import CameraReader, Clip
from vad_edge.agent.clips.recorder import ClipRecorder
from vad_edge.agent.clips.store import ClipStore
from vad_edge.agent.commands import Dispatcher
from vad_edge.agent.delivery import Delivery, EventSender
from vad_edge.agent.events import EventTracker, Observation, anomaly_of, tamper_event
from vad_edge.agent.health import HealthServer, Metrics, sd_notify, watchdog_interval
from vad_edge.agent.inbox import ClipInbox, StatusChange
from vad_edge.agent.mqtt import MqttClient
from vad_edge.agent.outbox import Outbox, default_max_bytes
from vad_edge.agent.retained import RetainedState
from vad_edge.agent.schedule import Schedule, Slot, box_zone
from vad_edge.agent.settings import Settings
from vad_edge.agent.spill import SpillFile
from vad_edge.agent.snapshot import jpeg, overlay
from vad_edge.config import Camera, Config, ConfigError
from vad_edge.cpu_share import agent_threads, graph_threads, use_threads
from vad_edge.data.sources import Frame, is_file_source
from vad_edge.model.tamper import REFERENCE_SUFFIX, TamperDetector, load_reference
from vad_edge.model.zones import ZoneMap
from vad_edge.runtime.bundle import Bundle, calibration_dir
from vad_edge.runtime.hardware import choose_placement, pick_device

log = logging.getLogger("vad_edge.agent")


@dataclass
class CameraState:
    config: Camera
    bundle: Bundle
    tracker: EventTracker
    detect: bool
    multiplier: float
    inbox: ClipInbox
    status: str = "offline"
    frames: int = 0
    # Of the frames scored with the current bundle, those above its normal_p99 (about 1 % on footage like
    # the footage its threshold came from); a new bundle starts both afresh.
    with_bundle: int = 0
    above_normal: int = 0
    last_score: float | None = None
    last_raw: float | None = None
    latencies: deque = field(default_factory=lambda: deque(maxlen=200))
    times: deque = field(default_factory=lambda: deque(maxlen=50))
    # Events held back, in order, behind an end that waits for its clip: [event, the event id it waits
    # for or None]; they go out as soon as nothing before them waits.
    held: deque = field(default_factory=deque)
    zones: ZoneMap | None = None  # where to look (cameras[].zones), applied before a clip becomes one score
    # The camera's own health (cameras[].tamper): its detector (fed on the reader's thread), the tamper in
    # force and the id its start and end share, and the clips kept from scoring as tampered (or suspect).
    tamper: TamperDetector | None = None
    tampered: str | None = None
    tamper_id: str | None = None
    withheld: int = 0
    suspect_frames: int = 0  # the newest clips that still hold a frame the tamper check found suspect
    tamper_failing: bool = False
    # Its weekly windows (cameras[].schedule) and the slot in force, applied when it last changed.
    schedule: Schedule | None = None
    slot: Slot | None = None

    @property
    def threshold(self) -> float:
        return self.bundle.threshold * self.multiplier


class Agent:
    def __init__(self, config: Config, on_event=None, on_scored=None, clock=time.time):
        self.config = config
        # The wall clock (epoch seconds) the schedules' edges are read on, and when a /set was made; tests
        # inject one.
        self.clock = clock
        self.timezone = box_zone(config.timezone)
        if any(cam.schedule for cam in config.cameras):
            log.info("schedules run in the time zone %s", self.timezone.key)
        # Optional observers (the demo's): each stored event (on_event, called by the delivery); each scored
        # frame (camera, Observation).
        self.on_scored = on_scored
        preflight.check(config)
        self.device = pick_device(config.model.device)
        self.threads = use_threads(agent_threads(config.model.threads))  # torch's, and so the kernels'
        self.graph_threads = graph_threads(config.model.threads)  # OpenVINO's or ONNX Runtime's
        self.runtime, self.precision = choose_placement(config.model.precision, config.model.runtime,
                                                        self.device.type)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        max_bytes = (int(config.outbox.max_mb * 2**20) if config.outbox.max_mb
                     else default_max_bytes(config.state_dir))
        self.outbox = Outbox(config.state_dir / "outbox.sqlite", config.outbox.max_events, max_bytes)
        self.settings = Settings(self.outbox, clock)
        self.commands = Dispatcher(self, self.settings)
        self.metrics = Metrics()
        self.metrics.precision.labels(self.precision.name, self.precision.reason).set(1)
        self.metrics.runtime.labels(self.runtime.name, self.runtime.reason).set(1)
        self.mqtt = MqttClient(config, self.command)
        # At each connect the retained state is replayed first, then the pending events (constructed in order).
        self.retained = RetainedState(self.mqtt)
        self.sender = EventSender(self.outbox, self.mqtt)
        self.delivery = Delivery(self.outbox, self.sender, SpillFile(config.state_dir), on_event)
        self.topics = self.mqtt.topics
        self.stop_event = threading.Event()
        self._readers_running = False  # start() ran
        self.started = time.monotonic()
        self.last_loop = time.monotonic()
        self._changes: queue.SimpleQueue = queue.SimpleQueue()  # commands and reloads from other threads
        self.bundles = BundleLoader(config, self.device,
                                    lambda loaded: self._changes.put((self._apply_bundles, loaded)), self.graph_threads)
        self.cameras: dict[str, CameraState] = {}
        self.readers: dict[str, CameraReader] = {}
        self.unusable: dict[str, str] = {}  # camera -> why it cannot score (its bundle): offline, retried on reload
        loaded = self.bundles.load_all()
        for cam in config.cameras:
            self._add_camera(cam, loaded[cam.name])
        ended = self.delivery.restore()  # what the last stop could not store, first
        for stale in self.outbox.open_events():  # the agent was killed mid-anomaly: end it, and say why
            if anomaly_of(stale.event["event_id"]) in ended:
                continue  # its end went out at the stop, or waits in the spill: not the open record's
            end = EventTracker.interrupted(stale.event, "agent restarted")
            log.warning("event %s of camera %s was never ended (the agent was stopped hard): ending it now",
                        anomaly_of(end["event_id"]), end["camera"])
            self.delivery.put(stale.topic, end)
            self.sender.never_sent.add(end["event_id"])
        refused = [f"cameras.{cam.name}.fps: {cam.fps:g}, but {state.bundle.path.name} was trained at "
                   f"{state.bundle.fps:g} fps; clips are always sampled at the model's rate (whatever the "
                   f"camera delivers, and a box too slow for it skips whole clips): remove fps"
                   for cam in config.cameras if (state := self.cameras.get(cam.name)) and cam.fps is not None
                   and not math.isclose(cam.fps, state.bundle.fps, rel_tol=0.01)]
        if refused:
            self.outbox.close()
            raise ConfigError("\n".join(refused))
        self.clip_store = ClipStore(config.state_dir / "clips", int(config.clips.max_mb * 2**20),
                                    config.clips.max_age_hours * 3600)
        self.recorder = ClipRecorder(config.cameras, config.clips, self.clip_store)
        self.health = (HealthServer(config.health.host, config.health.port, self.metrics,
                                    lambda: status.health(self), self.clip_store.find)
                       if config.health.port else None)

    def _add_camera(self, cam: Camera, bundle: Bundle | ValueError) -> bool:
        """Sets a camera up to score; a camera whose bundle could not be loaded stays offline with the reason
        (the others run) and is tried again on the next reload."""
        if isinstance(bundle, ValueError):
            self.unusable[cam.name] = f"cannot load its model: {bundle}"
            log.error("camera %s offline: %s (fix it, then reload: SIGHUP or recalibrate)", cam.name, bundle)
            return False
        self.unusable.pop(cam.name, None)
        zones = ZoneMap(cam.zones)
        tracker = EventTracker(self.config.device_id, cam.name, cam.min_event_frames, cam.cooldown,
                               bundle.model_info, bundle.calibration, zones=zones)
        plan = Schedule(cam.schedule, self.timezone)
        slot = plan.at(self.clock())
        detect, multiplier = self._start_settings(cam, slot)
        live = not is_file_source(cam.source) or cam.realtime
        self.cameras[cam.name] = CameraState(cam, bundle, tracker, detect, multiplier, ClipInbox(live),
                                             schedule=plan, slot=slot, zones=zones, tamper=self._tamper_detector(cam))
        self.readers[cam.name] = CameraReader(cam, bundle.fps, bundle.size, self._on_clip, self._on_status)
        return True

    def reload(self, *_args) -> None:
        """SIGHUP or the MQTT `recalibrate` command: re-read every camera's bundle (BundleLoader)."""
        self.bundles.request()

    def _apply_bundles(self, loaded: dict[str, Bundle | ValueError]) -> None:
        """In the loop: swaps the freshly loaded bundles in (a moment's work)."""
        for cam in self.config.cameras:
            bundle = loaded[cam.name]
            if cam.name in self.unusable:
                if self._add_camera(cam, bundle):
                    log.info("camera %s: its model loads now; starting it", cam.name)
                    self._publish_settings(self.cameras[cam.name])
                    if self._readers_running:
                        self.readers[cam.name].start()
                continue
            if isinstance(bundle, ValueError):  # a bad new bundle: keep scoring with the old one
                log.error("camera %s keeps its bundle: %s", cam.name, bundle)
                continue
            state = self.cameras[cam.name]
            self._end_tamper(cam.name, state, "recalibrated")  # the picture learnt anew: judge it against that
            state.tamper = self._tamper_detector(cam)
            state.bundle, state.with_bundle, state.above_normal = bundle, 0, 0
            state.tracker.model, state.tracker.calibration = bundle.model_info, bundle.calibration
            self.readers[cam.name].retune(bundle.fps, bundle.size)
            log.info("camera %s scores with %s (threshold %.6g)", cam.name, bundle.path, bundle.threshold)

    def _tamper_detector(self, cam: Camera) -> TamperDetector | None:
        """The camera's tamper check, with the normal picture its calibration left (vad-edge calibrate
        --camera writes it beside the bundles), or none: it then learns one from its first seconds."""
        if not cam.tamper.enabled:
            return None
        reference = load_reference(calibration_dir(self.config) / f"{cam.name}{REFERENCE_SUFFIX}")
        return TamperDetector(reference, after=cam.tamper.after)

    # --- clips in (reader threads) ----------------------------------------------------------------------

    def _on_clip(self, camera: str, clip: Clip) -> None:
        self.recorder.push(camera, clip[-1])  # its newest frame, for a clip encoded from frames
        state = self.cameras[camera]
        if (detector := state.tamper) is not None:  # each new frame: a freeze is only seen frame to frame
            try:
                for change in detector.update(clip[-1].small, clip[-1].time):
                    self._changes.put((self._tamper_changed, camera, detector, change, clip[-1].time))
                state.tamper_failing = False
                # A tampered picture is no scene: no clip holding one is scored, so none raises an anomaly.
                state.suspect_frames = len(clip) if detector.suspect else max(0, state.suspect_frames - 1)
                if state.suspect_frames > 0:
                    state.withheld += 1
                    return
            except Exception:  # the camera's clips go on to be scored whatever the detector's fault
                if not state.tamper_failing:
                    state.tamper_failing = True
                    log.exception("camera %s: the tamper check fails (said once until it works again)", camera)
        skipped = state.inbox.put_clip(clip, self.stop_event)
        if skipped:
            self.metrics.skipped.labels(camera).inc(skipped)

    def _on_status(self, camera: str, status: str, reason: str) -> None:
        self.cameras[camera].inbox.put_status(status, reason)  # applied after the clips read before it

    def _apply_status(self, state: CameraState, change: StatusChange) -> None:
        state.status = change.status
        self.metrics.online.labels(state.config.name).set(1 if change.status == "online" else 0)
        if change.status != "online":
            self._commit(state, state.tracker.close())
        self._publish_status(state)

    def _publish_status(self, state: CameraState) -> None:
        shown = state.status if state.detect else "disabled"
        self.retained.set(self.topics.camera(state.config.name, "status"), shown)

    # --- commands (MQTT network thread) -----------------------------------------------------------------

    def command(self, camera: str, what: str, payload: str) -> None:
        """Called by MQTT's thread; applied by the inference loop, which owns all camera state."""
        self._changes.put((self.commands.apply, camera, what, payload))

    # The dispatcher's target (commands.CommandTarget), called in the loop.

    def has_camera(self, camera: str) -> bool:
        return camera in self.cameras

    def set_detect(self, camera: str, detect: bool) -> None:
        state = self.cameras[camera]
        state.detect = detect
        if not detect:
            self._commit(state, state.tracker.close())
        self._publish_settings(state)
        self._publish_status(state)

    def set_multiplier(self, camera: str, multiplier: float) -> None:
        state = self.cameras[camera]
        state.multiplier = multiplier
        self._publish_settings(state)

    # --- schedules (cameras[].schedule, schedule.py) -----------------------------------------------------

    def _start_settings(self, cam: Camera, slot: Slot) -> tuple[bool, float]:
        """Detect and the multiplier a camera starts with. A /set holds until the next window edge, and a
        restart is no edge: a saved /set made since the current slot began is kept (detection switched off
        for the evening stays off through a reboot until the window ends), as is any saved /set of a camera
        without a schedule. One made before the slot began was overridden at that edge, even if the agent
        was down then (or said nothing of when it was made): the slot's settings apply."""
        def kept(what: str) -> bool:
            at = self.settings.saved_at(what, cam.name)
            return slot.since is None or (at is not None and at >= slot.since)

        own_detect, own_multiplier = self._slot_settings(cam, slot)
        return (self.settings.detect(cam) if kept("detect") else own_detect,
                self.settings.multiplier(cam) if kept("threshold") else own_multiplier)

    @staticmethod
    def _slot_settings(cam: Camera, slot: Slot) -> tuple[bool, float]:
        """What a slot sets: its window's detect and multiplier, the camera's own where it says none."""
        return (cam.enabled if slot.detect is None else slot.detect,
                cam.threshold_multiplier if slot.multiplier is None else slot.multiplier)

    def _follow_schedules(self) -> None:
        """At a window's edge its settings apply (leaving into no window, the camera's own), through the
        path detect/set and threshold/set take, so their retained state follows; a /set between edges holds
        until the next one. What a window sets is not saved: a restart works it out again."""
        now = self.clock()
        for state in self.cameras.values():
            slot = state.slot
            if slot is None or slot.next_edge is None or (
                    (slot.since is None or slot.since <= now) and now < slot.next_edge):
                continue
            state.slot = state.schedule.at(now)  # also when the clock stepped back past the slot's start
            if (state.slot.window, state.slot.since) == (slot.window, slot.since):
                continue
            name = state.config.name
            detect, multiplier = self._slot_settings(state.config, state.slot)
            log.info("camera %s: %s: detect %s, threshold multiplier %g, until %s", name,
                     state.schedule.describe(state.slot) or "no schedule window", "on" if detect else "off",
                     multiplier, state.schedule.local_iso(state.slot.next_edge))
            if multiplier != state.multiplier:
                self.set_multiplier(name, multiplier)
            if detect != state.detect:
                self.set_detect(name, detect)

    def _tamper_changed(self, camera: str, detector: TamperDetector, change: dict, t: float) -> None:
        """A tamper starts or ends: an anomaly open now ends (the picture no longer shows the scene). The
        reader keeps a tampered (or suspect) camera's clips from scoring (_on_clip), so none raises an
        anomaly or counts toward its statistics."""
        state = self.cameras.get(camera)
        if state is None or state.tamper is not detector:  # removed, or its detector replaced by a reload
            return
        if change["state"] == "start":
            self._commit(state, state.tracker.close())
            state.tampered, state.tamper_id = change["reason"], str(uuid.uuid4())
        elif state.tamper_id is None:
            return
        event = tamper_event(self.config.device_id, camera, state.tamper_id, change, t)
        if change["state"] == "end":
            state.tampered = state.tamper_id = None
        log.warning("camera %s: tamper %s: %s (%s)", camera, change["state"], change["reason"], change.get("detail"))
        self.metrics.events.labels(camera, "tamper").inc()
        self.retained.set(self.topics.camera(camera, "tamper/state"), "ON" if state.tampered else "OFF")
        state.held.append([event, None])  # in order with the camera's anomaly events
        self._release(state)

    def _end_tamper(self, camera: str, state: CameraState, why: str) -> None:
        """Ends the camera's tamper in force, if any, for a reason of the agent's own (not the detector's)."""
        if state.tampered:
            self._tamper_changed(camera, state.tamper, {"state": "end", "reason": state.tampered, "detail": why},
                                 time.time())

    def _publish_settings(self, state: CameraState) -> None:
        name = state.config.name
        self.retained.set(self.topics.camera(name, "detect/state"), "ON" if state.detect else "OFF")
        self.retained.set(self.topics.camera(name, "threshold/state"), repr(state.multiplier))

    # --- events out -------------------------------------------------------------------------------------

    def _commit(self, state: CameraState, events: list[dict]) -> None:
        """Hands events on: retained state and snapshot at once, then into the outbox and out over MQTT; an
        end whose clip is being cut, and what follows it, once the clip is there (clips/recorder.py)."""
        for event in events:
            self.metrics.events.labels(state.config.name, event["type"]).inc()
            if event["type"] in ("start", "end"):
                self.retained.set(self.topics.camera(state.config.name, "anomaly"),
                                            "ON" if event["type"] == "start" else "OFF")
                self._publish_snapshot(state, event)
            state.held.append([event, self._clip_for(event)])
        self._release(state)

    def _clip_for(self, event: dict) -> str | None:
        """Starts or finishes the event's clip; the event id its end waits for, or None. A clip that cannot
        be made never holds back or loses the event: the end says why."""
        try:
            if event["type"] == "start":
                self.recorder.started(event)
            elif event["type"] == "end" and self.recorder.ended(event):
                return anomaly_of(event["event_id"])
        except Exception as exc:  # the event goes out whatever the clip's fault
            log.exception("camera %s: no clip for event %s", event.get("camera"), event.get("event_id"))
            if event["type"] == "end":
                event["clip"] = {"error": f"the clip could not be made ({type(exc).__name__}: {exc})"}
        return None

    def _release(self, state: CameraState) -> None:
        """Delivers the camera's held events up to the first that still waits for its clip: anomalies on
        cameras/<cam>/events, tampers on cameras/<cam>/tamper."""
        while state.held and state.held[0][1] is None:
            event = state.held.popleft()[0]
            leaf = "tamper" if event["type"] == "tamper" else "events"
            self.delivery.put(self.topics.camera(state.config.name, leaf), event)
        self.delivery.flush()

    def _attach_clips(self, clips: dict[str, dict]) -> None:
        """Gives each end that waited for its clip what the recorder made of it, and lets it go (and what
        waited behind it)."""
        if not clips:  # the loop asks every step; most steps no clip was finished
            return
        for state in self.cameras.values():
            for entry in state.held:
                if entry[1] in clips:
                    entry[0]["clip"], entry[1] = clips[entry[1]], None
                    self._publish_clip_link(state, entry[0])
            self._release(state)

    def _publish_clip_link(self, state: CameraState, end: dict) -> None:
        """Retains the camera's last clip with a full link to it, for Home Assistant's anomaly entity (its
        attributes) and anyone who comes later."""
        clip = end["clip"]
        if "url" not in clip or not self.config.health.port:
            return
        link = {"event": anomaly_of(end["event_id"]), "start_time": end.get("start_time"), "end_time": end.get("end_time"),
                **clip, "link": self.config.health.base_url() + clip["url"]}
        self.retained.set(self.topics.camera(state.config.name, "clip"), json.dumps(link))

    def _publish_snapshot(self, state: CameraState, event: dict) -> None:
        peak = state.tracker.peak
        if peak is None or peak.frame is None:
            return
        label = f"{state.config.name} {event['type']} peak {event['peak_score']:.2f}"
        image = overlay(peak.frame, peak.emap, event["region"], label, state.config.zones)
        self.retained.set(self.topics.camera(state.config.name, "snapshot"), jpeg(image))

    # --- the inference loop -----------------------------------------------------------------------------

    def _gather(self) -> tuple[dict[int, list[tuple[CameraState, Clip]]], bool]:
        """The next clip of every camera (status changes queued before it applied first), grouped by model;
        and whether anything was taken at all."""
        ready: dict[int, list] = {}
        took = False
        for state in self.cameras.values():
            while (item := state.inbox.get()) is not None:
                took = True
                if isinstance(item, StatusChange):
                    self._apply_status(state, item)
                    continue
                if state.detect and item[-1].small.shape[0] == state.bundle.size:
                    ready.setdefault(id(state.bundle), []).append((state, item))
                break
        return ready, took

    def _score(self, group: list[tuple[CameraState, Clip]]) -> None:
        bundle = group[0][0].bundle
        windows = np.stack([np.stack([f.small for f in clip]) for _, clip in group])
        scores = bundle.scorer.shipped_score(torch.from_numpy(windows), [state.zones for state, _ in group])
        raws = scores.raw.double().cpu().numpy()
        emaps = scores.emap[:, 0].float().cpu().numpy()
        now = time.monotonic()
        for (state, clip), raw, emap in zip(group, raws, emaps):
            try:
                self._take_score(state, clip[-1], float(raw), emap, now)  # a clip's score is its last frame's
            except Exception:  # this camera's events or observers failed: the cameras sharing the model go on
                log.exception("camera %s: handling its score failed; skipping this clip", state.config.name)

    def _take_score(self, state: CameraState, frame: Frame, raw: float, emap: np.ndarray, now: float) -> None:
        calibrated = raw / state.threshold
        state.frames += 1
        state.last_score, state.last_raw = calibrated, raw
        state.latencies.append(now - frame.arrived)
        state.times.append(now)
        self.metrics.frames.labels(state.config.name).inc()
        state.with_bundle += 1
        normal_p99 = state.bundle.normal_p99
        if normal_p99 is not None and raw > normal_p99:
            state.above_normal += 1
            self.metrics.above_normal.labels(state.config.name).inc()
        self.metrics.score.labels(state.config.name).set(calibrated)
        self.metrics.latency.labels(state.config.name).observe(now - frame.arrived)
        obs = Observation(frame.time, calibrated, raw, state.threshold, emap, frame.full)
        self._commit(state, state.tracker.step(obs))
        if self.on_scored:
            self.on_scored(state.config.name, obs)

    def step(self) -> bool:
        """One pass of the loop; False when no camera had a new frame."""
        self.last_loop = time.monotonic()
        self._follow_schedules()  # a window's edge first, then the commands that came since
        while not self._changes.empty():
            apply, *args = self._changes.get_nowait()
            apply(*args)
        self.delivery.flush()  # what waited for storage, before anything newer
        self.sender.retry_acks()
        self._attach_clips(self.recorder.done())
        ready, took = self._gather()
        for group in ready.values():
            try:
                self._score(group)
            except Exception:  # one model or camera failing must not stop the others
                names = ", ".join(state.config.name for state, _ in group)
                log.exception("scoring failed for %s; skipping these clips", names)
        return took or any(not s.inbox.empty() for s in self.cameras.values())

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        for state in self.cameras.values():
            self._publish_settings(state)
            if not state.detect:  # otherwise the reader's first word (online, or why not) is the status
                self._publish_status(state)
        for name in self.unusable:
            self.retained.set(self.topics.camera(name, "status"), "offline")
        for cam in self.config.cameras:  # the true state: no event runs yet, whatever a killed run left retained
            self.retained.set(self.topics.camera(cam.name, "anomaly"), "OFF")
            self.retained.set(self.topics.camera(cam.name, "tamper/state"), "OFF")
        self.delivery.flush()  # the ends of events a killed run left open
        models = sorted({s.bundle.model_info["name"] for s in self.cameras.values()}) or ["std"]
        for topic, payload in discovery.messages(self.config, self.topics, ", ".join(models)).items():
            self.retained.set(topic, payload)
        self.mqtt.start()
        if self.health:
            self.health.start()
        self.recorder.start()
        for reader in self.readers.values():
            reader.start()
        threading.Thread(target=self.bundles.serve, args=(self.stop_event,), name="bundle-loader", daemon=True).start()
        self._readers_running = True

    def run(self, until=None) -> None:
        """The loop, until stop() (SIGTERM), or until `until()` returns True."""
        self.start()
        sd_notify("READY=1")
        watchdog = watchdog_interval()
        next_stats = next_watchdog = time.monotonic()
        try:
            while not self.stop_event.is_set():
                busy = self.step()
                now = time.monotonic()
                if now >= next_stats:
                    self.clip_store.prune()  # clips past their age
                    self.mqtt.publish_stats(status.stats(self))
                    for reader in self.readers.values():
                        reader.check_watchdog()
                    next_stats = now + min(self.config.stats_interval, 1.0 if until else self.config.stats_interval)
                if watchdog and now >= next_watchdog:
                    sd_notify("WATCHDOG=1")
                    next_watchdog = now + watchdog
                if until is not None and until():
                    break
                if not busy:
                    self.stop_event.wait(0.01)
        finally:
            self.shutdown()

    def stop(self, *_args) -> None:
        self.stop_event.set()

    def shutdown(self, flush_timeout: float = 5.0) -> None:
        """Ends running events, lets the sender drain the outbox for a moment, says `stopped`. Events the
        outbox cannot store are sent from memory or counted lost (Delivery.close)."""
        sd_notify("STOPPING=1")
        self.stop_event.set()
        for reader in self.readers.values():
            reader.stop()
        for name, state in self.cameras.items():
            self._commit(state, state.tracker.close())
            self._end_tamper(name, state, "agent stopped")  # as an anomaly's: tamper/state not left ON
        deadline = time.monotonic() + flush_timeout
        self._attach_clips(self.recorder.close(deadline))  # the ends wait for their clips no longer
        # No reader may still be inside OpenCV when the interpreter finalises: that aborts the process
        # (SIGABRT instead of a clean exit). A stopped reader leaves at its next frame or wait.
        for reader in self.readers.values():
            if reader.ident is not None:
                reader.join(max(0.0, deadline - time.monotonic()))
                if reader.is_alive():
                    log.warning("camera %s: its reader did not stop in time", reader.camera.name)
        self.delivery.close(deadline)  # what storage refused goes out straight, or waits for keep() below
        # Until every stored event is acknowledged (those the full disk would not let it delete are already).
        while (self.mqtt.connected and self.outbox.depth() > len(self.sender.acked_undeleted())
               and time.monotonic() < deadline):
            self.sender.retry_acks()
            time.sleep(0.05)
        self.mqtt.publish_stats(status.stats(self))  # the final tally
        self.mqtt.stop()
        if self.health:
            self.health.stop()
        self.sender.retry_acks()  # the deletions a full disk refused, a last time
        left, delivered = self.outbox.depth(), len(self.sender.acked_undeleted())
        kept = self.delivery.keep()
        self.outbox.close()
        which = beside = ""
        if delivered:
            fate = ("recorded for the next start, not sent again" if kept and kept.delivered
                    else "sent once more, subscribers deduplicate on event_id")
            which = (f" ({left - delivered} never delivered; {delivered} delivered already, which the full state "
                     f"disk would not let it delete: {fate})")
        if kept and kept.unsent:
            beside = f", {len(kept.unsent)} kept beside it in {self.delivery.spill.path}"
        log.info("stopped; %d events left in the outbox for the next start%s%s, %d lost", left, which, beside,
                 self.delivery.lost)


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGHUP, agent.reload)
