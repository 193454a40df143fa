"""`vad-edge demo`: broker, agent, live printout, annotated video and timeline, on a synthetic clip."""

import json

import cv2

from vad_edge.cli import main
from vad_edge.data.synthetic import make_frames, write_video
from vad_edge.demo import SAMPLE


def test_demo_runs_end_to_end(tmp_path, tiny_checkpoint, capsys):
    clip = write_video(tmp_path / "clip.mp4", make_frames(80, 64, anomaly=(35, 50), seed=5)[0])
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--source", str(clip), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "event  " in printed and " start " in printed
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events][0] == "start" and events[-1]["type"] == "end"
    video = cv2.VideoCapture(str(out / "demo.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 76  # every scored frame, annotated
    video.release()
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    # The event's clip, as its end names it, beside the other outputs: encoded from the agent's frames.
    clip_file = out / events[-1]["clip"]["file"]
    clip_video = cv2.VideoCapture(str(clip_file))
    assert int(clip_video.get(cv2.CAP_PROP_FRAME_COUNT)) == events[-1]["clip"]["frames"] > 0
    clip_video.release()
    assert clip_file.stat().st_size == events[-1]["clip"]["bytes"]


def test_the_sample_clip_is_bundled():
    video = cv2.VideoCapture(str(SAMPLE))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 180
    video.release()


def test_demo_with_an_unreadable_source_exits_with_the_reason(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(f"line {i}" for i in range(500)))
    out = tmp_path / "demo"
    assert main(["demo", "--source", str(notes), "--out", str(out)]) == 1
    assert "notes.txt is a text file, not a video" in capsys.readouterr().err
    assert not out.exists()  # nothing claimed, nothing written


def test_demo_without_any_broker_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    """Before: a RuntimeError traceback."""
    import shutil
    import sys

    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)  # no mosquitto
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # and no amqtt: importing it fails
    assert main(["demo", "--fast", "--out", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no MQTT broker for the demo: install mosquitto") and err.count("\n") == 1


def test_other_libraries_log_from_warning_and_ours_from_info(tmp_path):
    """amqtt's state machine filled the demo's terminal with ~60 INFO lines between the demo's own. In a
    process of its own: pytest's log capture would keep the command from setting the logging up."""
    import subprocess
    import sys

    script = ("import logging, sys; from vad_edge.cli import main; main(['config', 'check', sys.argv[1]]); "
              "print([logging.getLogger(n).isEnabledFor(logging.INFO) for n in ('vad_edge.agent', "
              "'transitions.core', 'amqtt.broker')])")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "missing.yaml")], capture_output=True,
                          text=True)
    assert done.stdout.strip() == "[True, False, False]", done.stdout + done.stderr
