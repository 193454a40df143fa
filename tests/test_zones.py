"""Zones: where to look. Their weights, how the score and the motion terms read them, the config's checks,
`vad-edge zones`, and the bundled sample end to end through `vad-edge run` and a real mosquitto."""

import os
import subprocess
import sys
from datetime import datetime

import cv2
import numpy as np
import pytest

from mqtt_helpers import Subscriber, dedupe, stopped, wait_for
from test_agent import write_config
from vad_edge import config
from vad_edge.config import Zone
from vad_edge.demo import SAMPLE
from vad_edge.model.checkpoint import shipped
from vad_edge.model.zones import ZoneMap

LEFT = Zone(name="left", points=[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]], threshold_multiplier=0.5)
TOP = Zone(name="top", points=[[0.0, 0.0], [1.0, 0.0], [1.0, 0.25], [0.0, 0.25]], ignore=True)
# The sample's cyclist rides left to right between 0.55 and 0.8 of the height, among walkers.
PATH = [[0.0, 0.52], [1.0, 0.52], [1.0, 0.85], [0.0, 0.85]]
CORNER = [[0.8, 0.0], [1.0, 0.0], [1.0, 0.3], [0.8, 0.3]]  # a wall: nothing moves there


def test_weights_ignore_wins_then_the_most_sensitive():
    zones = ZoneMap([LEFT, TOP, Zone(name="spot", points=[[0.1, 0.5], [0.3, 0.5], [0.2, 0.7]], threshold_multiplier=0.25)])
    w = zones.weights(40, 40)
    assert w[30, 35] == 1.0  # outside every zone
    assert w[30, 5] == 2.0  # left: the threshold halved is the evidence doubled
    assert w[5, 5] == 0.0 and w[5, 35] == 0.0  # the ignore zone over the left one and elsewhere
    assert w[24, 8] == 4.0  # the smaller multiplier where two zones overlap
    assert ZoneMap([LEFT, TOP], ignore_only=True).weights(40, 40)[30, 5] == 1.0  # calibration's view


def test_ignored_motion_is_cleared_and_things_are_weighed_where_they_are():
    zones = ZoneMap([LEFT, TOP])
    flow = np.ones((32, 32, 2), np.float32)
    cleared = zones.clear_ignored(flow)
    assert not cleared[:8].any() and cleared[8:].all() and flow.all()  # the caller's flow untouched
    assert zones.at(np.array([0.9, 0.9, 0.1]), np.array([0.1, 0.9, 0.9]), 32, 32).tolist() == [2.0, 1.0, 0.0]
    cells = zones.cell_weights(4, 32, 32)
    assert cells[0].tolist() == [1.0] * 4  # all ignored: counts nothing either way
    assert cells[2].tolist() == [2.0, 2.0, 1.0, 1.0]
    hot = np.zeros((32, 32), bool)
    hot[20:24, 2:4] = True
    assert zones.touched(hot) == ["left"]  # an ignore zone is never named
    assert ZoneMap([]).clear_ignored(flow) is flow and not ZoneMap([])


@pytest.mark.parametrize("points, message", [
    ("[[0, 0], [1, 1], [1, 0], [0, 1]]", "crosses itself: edges 0 and 2"),
    ("[[0, 0], [1.2, 0], [1, 1]]", r"point 1 \[1.2, 0.0\] is outside the frame"),
    ("[[0, 0], [1, 0]]", "at least 3 points, got 2"),
    ("[[0, 0], [0.5, 0.5], [1, 1]]", "no area"),
])
def test_config_check_names_the_line_of_a_bad_polygon(points, message):
    text = f"device_id: b\ncameras:\n  - name: a\n    source: x.mp4\n    zones:\n      - name: z\n        points: {points}\n"
    with pytest.raises(config.ConfigError, match=rf"<config>:7: cameras.0.zones.0.points: .*{message}"):
        config.parse(text)


def test_config_refuses_twin_zone_names_and_an_ignore_zone_with_a_multiplier():
    zone = "{name: z, points: [[0, 0], [1, 0], [1, 1]]"
    with pytest.raises(config.ConfigError, match="zone names must be unique: z"):
        config.parse(f"device_id: b\ncameras: [{{name: a, source: x.mp4, zones: [{zone}}}, {zone}}}]}}]")
    with pytest.raises(config.ConfigError, match="an ignore zone has no threshold_multiplier"):
        config.parse(f"device_id: b\ncameras: [{{name: a, source: x.mp4, zones: [{zone}, ignore: true, "
                     f"threshold_multiplier: 2}}]}}]")


def test_zones_command_writes_the_cameras_picture_with_a_grid(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"device_id: b\nstate_dir: {tmp_path}/state\ncameras:\n  - name: gate\n    source: {SAMPLE}\n"
                    f"    zones: [{{name: path, points: {PATH}, threshold_multiplier: 0.5}}]\n"
                    f"  - name: gone\n    source: {tmp_path}/missing.mp4\n")
    out = tmp_path / "gate.png"
    done = subprocess.run([sys.executable, "-m", "vad_edge.cli", "zones", "--camera", "gate", "--config", str(path),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(out))
    assert image.shape[1] >= 960 and image.shape[0] == image.shape[1] * 240 // 360
    column = round(0.5 * image.shape[1])  # the grid's thick line at x = 0.5
    assert (image[image.shape[0] // 10: image.shape[0] // 2, column] > 200).all()
    missing = subprocess.run([sys.executable, "-m", "vad_edge.cli", "zones", "--camera", "gone", "--config", str(path)],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "camera gone:" in missing.stderr and "does not exist" in missing.stderr
    no_suffix = subprocess.run([sys.executable, "-m", "vad_edge.cli", "zones", "--camera", "gate", "--config",
                                str(path), "--out", str(tmp_path / "gate")], capture_output=True, text=True)
    assert no_suffix.returncode == 1 and "end it in .png or .jpg" in no_suffix.stderr


def test_the_sample_with_zones_end_to_end(tmp_path, broker):
    """One `vad-edge run` with four cameras on the sample, each with its zones, and a real mosquitto: an
    ignore zone over the cyclist's path raises no event; a zone of multiplier 0.5 there starts its event no
    later and scores higher than no zone; the same ignore zone over a wall behaves as no zone."""
    cams = {"plain": [], "ignored": [{"name": "path", "points": PATH, "ignore": True}],
            "sensitive": [{"name": "path", "points": PATH, "threshold_multiplier": 0.5}],
            "elsewhere": [{"name": "wall", "points": CORNER, "ignore": True}]}
    path = write_config(tmp_path, broker.port, shipped(), [
        {"name": name, "source": str(SAMPLE), "realtime": False, "zones": zones, "clip": {"enabled": False}}
        for name, zones in cams.items()])
    sub = Subscriber(broker.port)
    agent = subprocess.Popen([sys.executable, "-m", "vad_edge.cli", "run", "--config", str(path)],
                             env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        # Every camera plays the file to its end (offline), and each event's end is out.
        wait_for(lambda: all((sub.on(f"/cameras/{c}/status") or [b""])[-1] == b"offline" for c in cams), 600,
                 "every camera to play the sample to its end")
        wait_for(lambda: all(sum(e["type"] == "start" for e in dedupe(sub.events()) if e["camera"] == c)
                             == sum(e["type"] == "end" for e in dedupe(sub.events()) if e["camera"] == c)
                             for c in cams), 60, "every event's end")
    finally:
        err = stopped(agent)
    assert agent.returncode == 0, err[-2000:]
    events = dedupe(sub.events())
    starts = {c: [e for e in events if e["camera"] == c and e["type"] == "start"] for c in cams}
    peaks = {c: max((e["peak_score"] for e in events if e["camera"] == c), default=0.0) for c in cams}
    # A file's frames are stamped from when its camera opened it: the four open within a frame (0.1 s).
    first = {c: datetime.fromisoformat(s[0]["start_time"].replace("Z", "+00:00")).timestamp() if s else None
             for c, s in starts.items()}
    assert starts["plain"] and not starts["ignored"], starts
    assert first["sensitive"] <= first["plain"] + 0.1
    assert peaks["sensitive"] > peaks["plain"]
    assert all(e["zones"] == ["path"] for e in events if e["camera"] == "sensitive" and e["type"] == "end")
    assert len(starts["elsewhere"]) == len(starts["plain"]) and abs(first["elsewhere"] - first["plain"]) < 0.1
    assert peaks["elsewhere"] == pytest.approx(peaks["plain"], rel=0.05)
    assert all(e["zones"] == [] for e in events if e["camera"] in ("plain", "elsewhere"))


def test_calibration_reads_the_footage_without_its_ignore_zones(tiny_checkpoint):
    """What calibrate fits the normal statistics on: nothing from an ignore zone, in the pixel terms or the
    motion terms."""
    import torch

    from vad_edge.data.videos import Video
    from vad_edge.model import checkpoint
    from vad_edge.runtime.batch import clip_motion, term_means
    from vad_edge.runtime.scorer import Scorer

    model, _ = checkpoint.load(tiny_checkpoint, torch.device("cpu"))
    size = model.profile.size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, size, size, 3), dtype=np.uint8)
    frames[:, :, : size // 2] = 90  # the left half still, the right half noise that moves every frame
    video = Video("site", frames, None, None)
    right = ZoneMap([Zone(name="r", points=[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]], ignore=True)],
                    ignore_only=True)
    scorer = Scorer(model, "float32")
    plain, masked = (term_means(scorer, [video], progress=False, zones=z)[0] for z in (None, right))
    assert (masked[:, 1] < 0.6 * plain[:, 1]).all()  # the motion error lives in the ignored half
    things_plain, _ = clip_motion([video], progress=False, places=False)
    things_masked, _ = clip_motion([video], progress=False, places=False, zones=right)
    assert sum(len(t) for t in things_plain[0]) > 0
    assert all((t[:, 2] < 0.5).all() for t in things_masked[0])  # nothing found moving on the right
