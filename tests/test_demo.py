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
