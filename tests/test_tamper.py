"""The camera tamper detector (vad_edge/model/tamper.py) on the bundled sample, made into footage by
tamper_footage.py and fed at 10 fps with the footage's own times (never the clock): each tamper is told with
its reason within 10 s and ends once the picture is back; ten minutes of normal footage (exposure changes, a
person at the lens) tell none; how far, and how slowly, a camera must move to be told, and what is not a
move (a nudge, a flat sky, a person standing at the lens); the reference's arrays; a detector without a
reference learns one, and tells a covered or frozen camera before it has one. Then in the agent, end to end."""

import cv2
import numpy as np
import pytest
from safetensors.numpy import load, save
from tamper_footage import (FPS, TAMPERS, close_person, covered, normal_footage, person_texture, rotated, sample_frames,
                            shifted, tampered_footage)

from vad_edge.model.tamper import TamperDetector, TamperReference

AFTER = 3.0  # the detector's hold, both ways
BEFORE, DURING, BACK = 10.0, 20.0, 15.0  # seconds of the tamper footage: normal, tampered, normal again
WITHIN = 10.0  # seconds from a change of the picture to its event


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return sample_frames()


@pytest.fixture(scope="module")
def reference(frames) -> TamperReference:
    return TamperReference.learn(frames[:len(frames) // 2])


def feed(detector: TamperDetector, footage) -> list[tuple[float, dict]]:
    """(time, change) of every change the detector reports on the footage's (time, frame, ...)."""
    return [(t, change) for t, frame, *_ in footage for change in detector.update(frame, t)]


def states(changes: list[tuple[float, dict]]) -> list[tuple[str, str]]:
    return [(change["state"], change["reason"]) for _, change in changes]


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_each_tamper_is_told_with_its_reason_and_ends_once_the_picture_is_back(frames, reference, tamper):
    reason = TAMPERS[tamper][0]
    detector = TamperDetector(reference, after=AFTER)
    # The second half of the sample first: footage the reference was not learned on.
    changes = feed(detector, tampered_footage(frames, tamper, BEFORE, DURING, BACK, first=len(frames) // 2))
    assert states(changes) == [("start", reason), ("end", reason)], changes
    (started, start), (ended, _) = changes
    assert BEFORE + AFTER <= started <= BEFORE + WITHIN, changes
    assert BEFORE + DURING + AFTER <= ended <= BEFORE + DURING + WITHIN, changes
    assert start["detail"]
    assert detector.active is None


def test_the_tamper_in_force_is_active_until_it_ends(frames, reference):
    detector = TamperDetector(reference, after=AFTER)
    active = []  # after each frame
    for t, frame in tampered_footage(frames, "defocused (blur sigma 5)", BEFORE, DURING, BACK):
        detector.update(frame, t)
        active.append(detector.active)
    assert active[round(BEFORE * FPS) - 1] is None
    assert active[round((BEFORE + DURING) * FPS) - 1] == "defocused"
    assert active[-1] is None


def test_one_tamper_gives_way_to_the_next_in_one_update(frames, reference):
    """Covered, then uncovered facing elsewhere: covered ends and moved starts together."""
    detector = TamperDetector(reference, after=AFTER)
    footage = []
    for i in range(round(45 * FPS)):
        t, frame = i / FPS, frames[i % len(frames)]
        footage.append((t, covered(frame, 0) if 10 <= t < 20 else shifted(frame) if 20 <= t < 35 else frame))
    changes = feed(detector, footage)
    assert states(changes) == [("start", "covered"), ("end", "covered"), ("start", "moved"), ("end", "moved")]
    assert changes[1][0] == changes[2][0] <= 20 + WITHIN


def test_ten_minutes_of_normal_footage_tell_no_tamper(frames, reference):
    footage = list(normal_footage(frames, 600.0, seed=0))
    # The footage holds what it must not be mistaken for: exposure from dark to bright, sudden changes, and
    # a person hiding a quarter to a third of the picture for seconds, several times.
    gains = np.array([scene["gain"] for *_, scene in footage])
    hidden = np.array([scene["person"] for *_, scene in footage])
    assert gains.min() < 0.7 and gains.max() > 1.3
    assert np.sum(np.abs(np.diff(gains)) > 0.2) >= 5
    assert np.sum(np.diff((hidden > 0).astype(int)) == 1) >= 3 and hidden.max() >= 0.25
    assert np.sum(hidden >= 0.2) >= 3 * 4 * FPS

    detector = TamperDetector(reference, after=AFTER)
    assert feed(detector, footage) == []
    # The reference it kept up to date all along still tells the camera turned away.
    turned = [(600.0 + i / FPS, shifted(frame)) for i, frame in enumerate(frames[:round(WITHIN * FPS)])]
    assert states(feed(detector, turned)) == [("start", "moved")]


@pytest.mark.parametrize("change, reason", [
    (lambda frame: shifted(frame, 0.08), "moved"),  # turned by 8 % of the width
    (lambda frame: rotated(frame, 5.0), "moved"),  # rolled by 5 degrees
    (lambda frame: shifted(frame, 0.02), None),  # nudged by 2 %: the camera still sees what it watched
])
def test_how_far_a_camera_must_move(frames, reference, change, reason):
    detector = TamperDetector(reference, after=AFTER)
    changes = feed(detector, [(i / FPS, change(frame)) for i, frame in enumerate(frames)])
    assert states(changes) == ([("start", reason)] if reason else []), changes


def test_a_camera_turned_slowly_is_told_too(frames, reference):
    """Turned by 15 % of the width over a minute: the reference follows normal frames too slowly to go along."""
    detector = TamperDetector(reference, after=AFTER)
    footage = [(i / FPS, shifted(frames[i % len(frames)], 0.15 * min(i / (60 * FPS), 1.0)))
               for i in range(round(75 * FPS))]
    assert states(feed(detector, footage)) == [("start", "moved")]


@pytest.mark.parametrize("flat", [100, 120])
def test_flat_sky_over_a_busy_scene(frames, flat):
    """The top `flat` rows of 240 are an empty sky (noise only) and below people come and go: neither the sky
    nor the people are taken for a move, and a turn along the pavement's lines is still told."""
    rng = np.random.default_rng(0)

    def sky(frame: np.ndarray) -> np.ndarray:
        frame = frame.copy()
        frame[:flat] = np.clip(rng.normal(150, 2, frame[:flat].shape), 0, 255).astype(np.uint8)
        return frame

    skies = [sky(frame) for frame in frames]
    reference = TamperReference.learn(skies[:len(skies) // 2])
    normal = [(i / FPS, skies[i % len(skies)]) for i in range(round(120 * FPS))]
    assert feed(TamperDetector(reference, after=AFTER), normal) == []
    turned = [(i / FPS, shifted(frame)) for i, frame in enumerate(skies[:round(WITHIN * FPS)])]
    assert states(feed(TamperDetector(reference, after=AFTER), turned)) == [("start", "moved")]


@pytest.mark.parametrize("x", [0.0, 0.3, 0.6])
def test_a_person_standing_at_the_lens_is_not_a_moved_camera(frames, reference, x):
    """However long they stay: they hide a part of the scene (here 30 %), a moved camera all of it."""
    height, width = frames[0].shape[:2]
    texture = person_texture(int(0.4 * width), int(0.75 * height), np.random.default_rng(1))
    detector = TamperDetector(reference, after=AFTER)
    footage = [(i / FPS, close_person(frame, texture, int(x * width), height - texture.shape[0]))
               for i, frame in enumerate(frames)]
    assert feed(detector, footage) == []


def test_the_reference_round_trips_through_its_arrays(frames, reference):
    arrays = reference.to_arrays()
    assert all(isinstance(value, np.ndarray) for value in arrays.values())
    back = TamperReference.from_arrays(load(save(arrays)))  # the way the agent keeps it: safetensors
    np.testing.assert_array_equal(back.gradients, reference.gradients)
    np.testing.assert_array_equal(back.energy, reference.energy)
    assert back.contrast == pytest.approx(reference.contrast, rel=1e-6)
    assert back.sharpness == pytest.approx(reference.sharpness, rel=1e-6)
    footage = list(tampered_footage(frames, "moved (rotated 12°)", BEFORE, DURING, BACK))
    changes = feed(TamperDetector(back), footage)
    assert states(changes) == [("start", "moved"), ("end", "moved")]
    assert changes == feed(TamperDetector(reference), footage)


@pytest.mark.parametrize("spoil, problem", [
    (lambda a: a.pop("contrast"), "missing contrast"),
    (lambda a: a.update(extra=np.zeros(1, np.float32)), "unexpected extra"),
    (lambda a: a.update(gradients=a["gradients"][..., 0]), "gradients has shape"),
    (lambda a: a.update(gradients=a["gradients"][:, :80]), "gradients has shape"),
    (lambda a: a.update(gradients=np.full_like(a["gradients"], np.nan)), "gradients must be finite"),
    (lambda a: a.update(gradients=a["gradients"].astype(np.int32)), "gradients must be finite floats"),
    (lambda a: a.update(energy=a["energy"][:-1]), "energy must be 48 finite floats"),
    (lambda a: a.update(energy=-a["energy"]), "energy must be 48 finite floats of 0 or more"),
    (lambda a: a.update(contrast=np.array(-1.0, np.float32)), "contrast must be one finite float above 0"),
    (lambda a: a.update(sharpness=np.ones(2, np.float32)), "sharpness must be one finite float above 0"),
])
def test_bad_arrays_are_refused_naming_the_problem(reference, spoil, problem):
    arrays = reference.to_arrays()
    spoil(arrays)
    with pytest.raises(ValueError, match=problem):
        TamperReference.from_arrays(arrays)


def test_learning_a_reference_needs_frames():
    with pytest.raises(ValueError, match="no frames"):
        TamperReference.learn([])


def test_without_a_reference_it_learns_one_then_tells_a_moved_camera(frames):
    detector = TamperDetector(None, after=AFTER, learn_seconds=10.0)
    learned_at = None
    changes = []
    for t, frame in tampered_footage(frames, "moved (shifted 15 %)", 15.0, DURING, BACK):
        changes += [(t, change) for change in detector.update(frame, t)]
        if learned_at is None and detector.reference is not None:
            learned_at = t
    assert learned_at == pytest.approx(10.0)
    assert states(changes) == [("start", "moved"), ("end", "moved")], changes
    assert 15.0 + AFTER <= changes[0][0] <= 15.0 + WITHIN


@pytest.mark.parametrize("tamper", ["covered (dark)", "covered (bright)", "frozen (one frame repeated)"])
def test_covered_and_frozen_need_no_reference(frames, tamper):
    """From the first frame, before any reference is learned (and none is learned from the tampered frames)."""
    detector = TamperDetector(None, after=AFTER)
    changes = feed(detector, tampered_footage(frames, tamper, 0.0, DURING, BACK))
    reason = TAMPERS[tamper][0]
    assert states(changes) == [("start", reason), ("end", reason)], changes
    assert changes[0][0] <= WITHIN


def test_a_timeline_that_starts_over_restarts_the_hold(frames, reference):
    """A file that loops, a clock set back: the hold counts on from the new times, it does not wait for the
    old ones to come back."""
    detector = TamperDetector(reference, after=AFTER)
    dark = [covered(frame, 0) for frame in frames]
    assert feed(detector, [(100.0 + i / FPS, frame) for i, frame in enumerate(dark[:20])]) == []
    changes = feed(detector, [(i / FPS, frame) for i, frame in enumerate(dark[20:100])])
    assert states(changes) == [("start", "covered")]
    assert changes[0][0] == pytest.approx(AFTER)


# --- in the agent, end to end ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tamper, reason", [("covered (dark)", "covered"), ("moved (shifted 15 %)", "moved")])
def test_the_agent_says_a_tamper_on_its_own_topic_and_scores_no_anomaly_meanwhile(tmp_path, broker, tamper, reason):
    """`vad-edge run` on a camera that is tampered with from 12 s to 32 s of its footage, with the reference its
    calibration left, and a real mosquitto: a tamper start on cameras/<cam>/tamper within 10 s, then its end;
    the retained tamper/state follows; while it lasts no clip is scored."""
    import json
    import os
    import subprocess
    import sys
    from datetime import datetime

    from mqtt_helpers import Subscriber, dedupe, stopped, wait_for
    from test_agent import write_config
    from vad_edge.data.synthetic import write_video
    from vad_edge.model.checkpoint import shipped
    from vad_edge.model.tamper import REFERENCE_SUFFIX, save_reference

    frames = sample_frames()
    video = write_video(tmp_path / "gate.mp4", np.stack(
        [f for _, f in tampered_footage(frames, tamper, before=12.0, during=20.0, after=14.0)]))
    calibration = tmp_path / "state" / "calibration"
    calibration.mkdir(parents=True)
    # What calibrate leaves: the reference learnt from the camera's normal footage at the model's size.
    small = [cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in frames]
    save_reference(calibration / f"gate{REFERENCE_SUFFIX}", TamperReference.learn(small))
    path = write_config(tmp_path, broker.port, shipped(), [
        {"name": "gate", "source": str(video), "realtime": False, "clip": {"enabled": False}}])
    sub = Subscriber(broker.port)
    agent = subprocess.Popen([sys.executable, "-m", "vad_edge.cli", "run", "--config", str(path)],
                             env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (sub.on("/cameras/gate/status") or [b""])[-1] == b"offline", 600, "the footage played")
        wait_for(lambda: len(sub.on("/cameras/gate/tamper")) >= 2, 60, "the tamper's start and end")
    finally:
        err = stopped(agent)
    assert agent.returncode == 0, err[-2000:]
    tampers = [json.loads(p) for p in sub.on("/cameras/gate/tamper")]
    assert [(e["type"], e["state"], e["reason"]) for e in tampers] == [("tamper", "start", reason), ("tamper", "end", reason)]
    assert tampers[0]["event_id"].split(":")[0] == tampers[1]["event_id"].split(":")[0]
    assert sub.on("/cameras/gate/tamper/state")[-2:] == [b"ON", b"OFF"]
    stamp = lambda e: datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()  # noqa: E731
    began = stamp(tampers[0]) - 12.0 - 3.0  # the footage's first frame: its time from the start's own delay
    assert stamp(tampers[0]) - began - 12.0 <= 10.0  # said within 10 s of the tamper
    # Nothing scored in between: no anomaly starts while the camera is tampered with.
    anomalies = [e for e in dedupe(sub.events()) if e["type"] == "start"]
    assert not [e for e in anomalies if stamp(tampers[0]) <= datetime.fromisoformat(
        e["start_time"].replace("Z", "+00:00")).timestamp() < stamp(tampers[1])]


def test_a_recalibration_judges_the_camera_against_its_new_picture(tmp_path, tiny_checkpoint):
    """A camera turned on purpose is told as moved; the installer recalibrates and reloads: the tamper ends
    ("recalibrated"), the new picture is the reference, and a change the replaced detector still had queued
    is ignored. A tamper leaves no open-anomaly record for a restart to end."""
    from vad_edge import config
    from vad_edge.agent.runner import Agent
    from vad_edge.model.tamper import REFERENCE_SUFFIX, save_reference

    agent = Agent(config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "gate", "source": "rtsp://127.0.0.1:1/none"}]}))
    try:
        state, old = agent.cameras["gate"], agent.cameras["gate"].tamper
        assert old is not None and old.reference is None  # no calibration yet: it would learn one
        agent._tamper_changed("gate", old, {"state": "start", "reason": "moved", "detail": "5 % in place"}, 1.0)
        assert state.tampered == "moved"
        (tmp_path / "state" / "calibration").mkdir()
        save_reference(tmp_path / "state" / "calibration" / f"gate{REFERENCE_SUFFIX}",
                       TamperReference.learn(sample_frames()[:50]))
        agent._apply_bundles(agent.bundles.load_all())
        assert state.tampered is None and state.tamper is not old and state.tamper.reference is not None
        agent._tamper_changed("gate", old, {"state": "start", "reason": "covered", "detail": "late"}, 2.0)
        assert state.tampered is None
        stored = [(p.event["state"], p.event["reason"], p.event["detail"]) for p in agent.outbox.pending()]
        assert stored == [("start", "moved", "5 % in place"), ("end", "moved", "recalibrated")]
        assert agent.outbox.open_events() == []
    finally:
        agent.outbox.close()
