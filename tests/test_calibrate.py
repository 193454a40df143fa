"""On-site calibration: footage checks, the threshold from the event rule, the bundle the agent picks up."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

from step_clock import StepClock
from vad_edge.runtime.bundle import load_bundle
from vad_edge.calibrate import (QUIET_HOLDOUT_SHARE, FootageError, busier_than_holdout, calibrate, check_footage,
                                choose_threshold, cluster_maxima, events_per_hour, split_by_time, sustained,
                                tail_of)
from vad_edge.cli import main
from vad_edge.data.synthetic import make_frames, write_video
from vad_edge.data.videos import Video


@pytest.fixture(autouse=True)
def priority_asked(monkeypatch):
    """`vad-edge calibrate` lowers its priority; run in-process here, it must not lower pytest's own."""
    from vad_edge import cpu_share

    asked = []
    monkeypatch.setattr(cpu_share, "lower_priority", asked.append)
    return asked


def video(frames, name="v"):
    return Video(name, frames)


def test_sustained_and_clusters():
    s = np.array([0, 5, 5, 5, 0, 5, 5, 0, 0, 0, 0, 9, 9, 9, 9.0])
    y = sustained(s, 3)
    assert y.tolist() == [0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9]
    assert cluster_maxima(y, 1.0, gap=2).tolist() == [5, 9]
    assert cluster_maxima(y, 1.0, gap=20).tolist() == [9]  # within the cooldown: one event


def test_threshold_meets_the_false_alarm_target_on_fresh_data():
    """i.i.d. heavy-ish tailed scores: the threshold chosen on 10 h must give about the target on another 10 h."""
    rng = np.random.default_rng(0)
    fps, hours = 10.0, 10
    train = [rng.gamma(4.0, 1.0, int(fps * 3600 * hours))]
    test = [rng.gamma(4.0, 1.0, int(fps * 3600 * hours))]
    choice = choose_threshold(train, target_per_hour=1.0, m=3, cooldown_s=3.0, fps=fps)
    assert choice.method.startswith("peaks-over-threshold")
    low, high = choice.interval_per_hour
    assert choice.expected_per_hour == pytest.approx(1.0) and low <= 1.0 <= high
    observed = events_per_hour(test, choice.raw, 3, 30, fps)
    assert 0.2 <= observed <= 5.0, observed
    # Not a frame quantile: a threshold at the frame-level 1/h quantile would alarm far more often.
    frame_quantile = np.quantile(train[0], 1 - 1 / (fps * 3600))
    assert choice.raw < frame_quantile


def test_the_tail_is_no_heavier_than_exponential():
    """A positive shape from a dozen clusters is noise that extrapolates the threshold far past every score
    seen; it falls back to the exponential tail. A light, bounded tail keeps its negative shape down to -0.5."""
    rng = np.random.default_rng(2)
    heavy = stats.genpareto.rvs(1.0, scale=0.5, size=12, random_state=rng)
    assert stats.genpareto.fit(heavy, floc=0.0)[0] > 0
    assert tail_of(heavy) == (0.0, pytest.approx(heavy.mean()))
    shape, scale = tail_of(stats.genpareto.rvs(-0.3, scale=2.0, size=3000, random_state=rng))
    assert shape == pytest.approx(-0.3, abs=0.05) and scale == pytest.approx(2.0, rel=0.1)
    # Below -0.5 (a tail that ends at the largest value seen): held at -0.5.
    assert tail_of(rng.uniform(0.0, 1.0, 3000))[0] == -0.5
    # The threshold from heavy cluster maxima: where the exponential tail meets the target.
    fps = 10.0
    series = [np.r_[np.zeros(300), np.full(3, x), np.zeros(300)] for x in heavy]
    choice = choose_threshold(series, 1.0, 3, 3.0, fps)
    hours = sum(len(s) for s in series) / fps / 3600
    assert choice.cluster_level == 0 and choice.raw == pytest.approx(heavy.mean() * np.log(12 / hours))
    assert choice.expected_per_hour == pytest.approx(1.0)


def test_threshold_on_little_footage_is_bounded_not_estimated():
    scores = [np.random.default_rng(1).normal(1.0, 0.1, 300)]
    choice = choose_threshold(scores, 1.0, 3, 3.0, 10.0)
    assert choice.method == "max-margin" and choice.raw > sustained(scores[0], 3).max()
    assert choice.expected_per_hour is None  # not estimated: only bounded
    assert events_per_hour(scores, choice.raw, 3, 30, 10.0) == 0
    assert choice.interval_per_hour[1] == pytest.approx(3 / (300 / 36000))


def test_footage_checks():
    frames, _ = make_frames(300, 32)
    assert check_footage([video(frames)])["frames"] == 300
    with pytest.raises(FootageError, match="too short"):
        check_footage([video(frames[:50])])
    with pytest.raises(FootageError, match="black"):
        check_footage([video(np.zeros_like(frames))])
    with pytest.raises(FootageError, match="frozen"):
        check_footage([video(np.repeat(frames[:1], 300, axis=0))])
    rng = np.random.default_rng(0)
    shaken = np.stack([np.roll(f, tuple(rng.integers(-6, 7, 2)), axis=(0, 1)) for f in frames])
    with pytest.raises(FootageError, match="shaking"):
        check_footage([video(shaken)])


def test_split_by_time():
    clips = [video(np.zeros((100, 4, 4, 3), np.uint8), str(i)) for i in range(3)]
    fit, held = split_by_time(clips)
    assert sum(len(v.frames) for v in fit) == 225 and sum(len(v.frames) for v in held) == 75
    assert [v.name for v in held] == ["2[holdout]"]


def test_a_holdout_quieter_than_the_rest_of_the_footage_is_told_apart():
    """The threshold comes from the footage's last quarter alone: the report must say when that quarter was
    quieter than the rest, and keep quiet when it was like it."""
    frames, _ = make_frames(150, 32, seed=3)
    alike = split_by_time([video(frames, f"copy{i}") for i in range(4)])  # the hold-out: the fourth copy
    assert busier_than_holdout(*alike) < QUIET_HOLDOUT_SHARE
    still = np.repeat(frames[-1:], 150, axis=0)  # the walkers stop for the footage's last quarter
    quiet = split_by_time([video(frames, "copy0"), video(frames, "copy1"), video(frames, "copy2"), video(still)])
    assert busier_than_holdout(*quiet) > 0.9


def test_calibrate_a_synthetic_site_and_the_agent_uses_it(tmp_path, tiny_checkpoint, monkeypatch, capsys,
                                                          priority_asked):
    monkeypatch.setenv("VAD_EDGE_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    write_video(site / "a.mp4", make_frames(160, 64, seed=11)[0])
    write_video(site / "b.mp4", make_frames(160, 64, seed=12)[0])
    # As a technician does on a box: the camera named in the device config, its bundle left in the state
    # directory, where the agent looks (the camera's source here is a folder of its recorded clips).
    device_config = tmp_path / "vad-edge.yaml"
    device_config.write_text(json.dumps({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "door", "source": str(site)}, {"name": "yard", "source": "x.mp4"}]}))
    assert main(["calibrate", "--config", str(device_config), "--camera", "door", "--base", str(tiny_checkpoint),
                 "--budget", "0.05", "--device", "cpu"]) == 0
    out = tmp_path / "state" / "calibration"
    assert priority_asked == [10]
    printed = capsys.readouterr().out
    assert "at 10 fps (the model's rate)" in printed
    report = json.loads((out / "door.report.json").read_text())
    # 8 s of hold-out cannot show a 1/h rate: bounded, not estimated, and the technician is told what to do.
    assert report["threshold_method"] == "max-margin" and report["expected_false_alarms_per_hour"] is None
    assert "at most" in printed and "(95% upper bound" in printed
    # Each key says what it holds: here a bound, not an interval; and the level the clusters are counted at.
    assert report["false_alarms_per_hour_range"]["kind"].startswith("95% upper bound")
    assert report["false_alarms_per_hour_range"]["low"] == 0.0 < report["false_alarms_per_hour_range"]["high"]
    clusters = report["exceedance_clusters"]
    assert clusters["count"] < clusters["needed_for_a_fit"] and clusters["above"] > 0
    assert "90th percentile" in clusters["above_means"]
    assert report["advice"] in printed and "minutes of footage" in report["advice"]
    busier = report["fit_clips_busier_than_holdout_p99"]
    assert 0 <= busier <= 1 and ("quieter than the rest" in report["advice"]) == (busier > QUIET_HOLDOUT_SHARE)
    steps = report["training_iterations"]
    assert (f"{steps['pretrain']} autoencoder and {steps['finetune']} fine-tuning iterations of the appearance "
            "(the motion U-Net as shipped)") in printed
    assert report["camera"] == "door" and report["footage"]["holdout_frames"] == 80
    assert (out / "door.report.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "door.work").exists()
    # The fusion is refitted on the site's own normal hold-out: there its pixel and object-speed terms average
    # 1 each, and the motion places, over their held-out 99.9th percentile, add between 0 and 1. The report
    # sums the places' counts up rather than listing them.
    assert report["fusion"]["name"] == "motion-cluster-speed-places"
    assert 3.0 <= report["holdout_score_stats"]["mean"] < 4.0
    assert report["fusion"]["places"]["model"]["moving_pixels"] > 0

    bundle = load_bundle(out / "door.safetensors", torch.device("cpu"))
    assert bundle.threshold == pytest.approx(report["threshold"])
    assert bundle.calibration == {"id": report["id"], "created": report["created"]}
    # The camera's normal picture for the agent's tamper checks, beside the bundle; its normal hold-out is
    # none of it tampered.
    from vad_edge.model.tamper import load_reference

    assert load_reference(out / "door.tamper.safetensors") is not None and report["holdout_frames_tampered"] == 0

    # The adapted model is judged as a checkpoint: `vad-edge eval` takes the bundle.
    from vad_edge.data.synthetic import write_dataset

    labelled = write_dataset(tmp_path / "labelled", size=64, train_videos=1, test_videos=1, frames=40)
    assert main(["eval", "--data", str(labelled), "--checkpoint", str(out / "door.safetensors"),
                 "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert evaluated["checkpoint"] == str(out / "door.safetensors") and 0 <= evaluated["auc_micro"] <= 100

    # The agent finds the bundle in its state directory with no edit to its config.
    from vad_edge import config
    from vad_edge.agent.runner import Agent

    agent = Agent(config.load(device_config))
    try:
        assert agent.cameras["door"].bundle.calibration["id"] == report["id"]
        assert agent.cameras["yard"].bundle.calibration["id"] is None
    finally:
        agent.outbox.close()


def test_calibrate_refuses_unusable_footage(tmp_path, tiny_checkpoint, capsys):
    frozen = tmp_path / "frozen.mp4"
    frames, _ = make_frames(1, 64)
    write_video(frozen, np.repeat(frames, 300, axis=0))
    assert main(["calibrate", "--source", str(frozen), "--base", str(tiny_checkpoint), "--out", str(tmp_path)]) == 1
    assert "frozen" in capsys.readouterr().err
    assert main(["calibrate", "--source", str(tmp_path / "none.mp4"), "--base", str(tiny_checkpoint)]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_an_interrupted_calibration_resumes_from_its_work_folder(tmp_path, tiny_checkpoint, monkeypatch):
    from vad_edge.trainer import Trainer

    footage = [video(make_frames(240, 32, seed=5)[0])]
    out = tmp_path / "calibration"

    pretrained = []

    def interrupted(self, clip):  # Ctrl-C (or a power cut) at the first fine-tuning step
        pretrained.append(self.iterations()["pretrain"])
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "cluster_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            calibrate(footage, tiny_checkpoint, out, "door", budget_minutes=0.05, device="cpu", progress=False,
                      clock=StepClock(0.05))
    assert (out / "door.work" / "model.state.pt").exists() and not (out / "door.safetensors").exists()

    resumed_at = []
    load_state = Trainer.load_state
    monkeypatch.setattr(Trainer, "load_state", lambda self, path: (load_state(self, path), resumed_at.append(self.stage)))
    report = calibrate(footage, tiny_checkpoint, out, "door", budget_minutes=0.05, device="cpu", progress=False,
                       clock=StepClock(0.05))
    assert resumed_at == ["finetune"]  # pre-training and K-means were not redone
    # ...and the report still counts the pre-training done before the interruption.
    assert report["training_iterations"]["pretrain"] == pretrained[0] > 0
    assert report["training_iterations"]["finetune"] >= 1
    assert (out / "door.safetensors").exists() and not (out / "door.work").exists()
    assert report["footage"]["fit_frames"] == 180


def test_calibration_adapts_the_motion_unet_only_when_asked(tmp_path, tiny_checkpoint):
    from vad_edge.model import checkpoint

    base, _ = checkpoint.load(tiny_checkpoint)
    footage = [video(make_frames(240, 32, seed=6)[0])]
    motion = [k for k in base.state_dict() if k.startswith(("motion_encoder.", "motion_decoder."))]

    def changed(learn_motion):
        report = calibrate(footage, tiny_checkpoint, tmp_path / str(learn_motion), "door", budget_minutes=0.05,
                           device="cpu", progress=False, learn_motion=learn_motion, clock=StepClock(0.05))
        assert report["training_iterations"]["finetune"] >= 1
        adapted = load_bundle(report["bundle"], torch.device("cpu")).model.state_dict()
        # The bundle is float16: compare against the base weights at that precision.
        return report["adapted"], {k for k, v in base.state_dict().items()
                                   if not torch.equal(adapted[k].float(), v.half().float())}

    adapted, moved = changed(learn_motion=False)
    assert adapted.startswith("appearance (the motion U-Net as shipped)")
    assert "centers" in moved and "appearance_encoder.proj.weight" in moved and not moved & set(motion)
    adapted, moved = changed(learn_motion=True)
    assert adapted == "appearance and motion" and moved & set(motion)


class PacedCamera:
    """A live camera stand-in: the bundled clip through OpenCV, looped; each frame read moves `clock` on by
    one frame period, as a camera delivering `fps` would, and is stamped (its pts) with that time."""

    def __init__(self, fps: float, clock: StepClock):
        import cv2

        from vad_edge.demo import SAMPLE

        self.capture, self.clock, self.fps = cv2.VideoCapture(str(SAMPLE)), clock, fps
        clock.step = 1 / fps

    def isOpened(self):
        return self.capture.isOpened()

    def get(self, prop):
        import cv2

        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_POS_MSEC: 1000 * self.clock.now}[prop]

    def read(self):
        self.clock()
        ok, frame = self.capture.read()
        if not ok:  # loop
            self.capture.set(1, 0)  # cv2.CAP_PROP_POS_FRAMES
            ok, frame = self.capture.read()
        return ok, frame

    def release(self):
        self.capture.release()


def test_recording_from_a_camera_is_bounded_and_kept_for_a_resumed_run(tmp_path, monkeypatch, capsys):
    from vad_edge.data import sources
    from vad_edge.calibrate import load_footage

    clock = StepClock(0.0)
    monkeypatch.setattr(sources, "open_source", lambda source: PacedCamera(fps=60, clock=clock))
    work = tmp_path / "gate.work"
    # 0.1 min at 50 fps would be 300 frames; the disk bound allows 220.
    videos = load_footage("rtsp://camera/stream", 32, minutes=0.1, fps=50, max_frames=220, work=work,
                          clock=lambda: clock.now)
    assert len(videos) == 1 and videos[0].frames.shape == (220, 32, 32, 3)  # one unbroken run
    assert (work / "footage.npz").exists()

    def no_camera(source):
        raise AssertionError("a resumed calibration must not record again")

    monkeypatch.setattr(sources, "open_source", no_camera)
    again = load_footage("rtsp://camera/stream", 32, minutes=0.1, fps=50, max_frames=220, work=work)
    assert np.array_equal(again[0].frames, videos[0].frames)
    assert "resuming with the footage recorded earlier" in capsys.readouterr().out


def test_a_stall_while_recording_splits_the_footage_into_runs(tmp_path, monkeypatch):
    """Clips must not span the stall: the recording is kept as two videos."""
    from vad_edge.data import sources
    from vad_edge.calibrate import load_footage

    clock = StepClock(0.0)

    class StallingCamera(PacedCamera):
        def read(self):
            if round(self.clock.now * 10) == 100:  # frame 100: the stream stalls for 2 s
                self.clock.now += 2.0
            return super().read()

    monkeypatch.setattr(sources, "open_source", lambda source: StallingCamera(fps=10, clock=clock))
    videos = load_footage("rtsp://camera/stream", 32, minutes=0.5, fps=10, max_frames=300,
                          work=tmp_path / "w", clock=lambda: clock.now)
    assert [len(v.frames) for v in videos] == [100, 200]


def test_a_camera_that_cannot_be_opened_is_refused_by_name(tmp_path):
    from vad_edge.calibrate import load_footage

    with pytest.raises(FootageError, match="cannot open rtsp://127.0.0.1:1/none"):
        load_footage("rtsp://127.0.0.1:1/none", 32, minutes=0.1, fps=10, max_frames=100, work=tmp_path / "w")


def test_a_tampered_stretch_of_the_hold_out_stays_out_of_the_threshold():
    """A hand over the lens while the hold-out was recorded: those clips' scores are cut out of the series the
    threshold is chosen on, and the rest kept in order."""
    from tamper_footage import covered, sample_frames

    from vad_edge.calibrate import untampered
    from vad_edge.data.videos import Video
    from vad_edge.model.tamper import TamperReference

    frames = [f for _ in range(3) for f in sample_frames()][:300]  # 30 s at 10 fps
    frames[100:200] = [covered(f, 0) for f in frames[100:200]]  # covered from 10 s to 20 s
    scores = np.arange(len(frames) - 4, dtype=np.float64)  # clip t..t+4's score: t
    runs, flagged = untampered([scores], [Video("hold-out", np.stack(frames))], TamperReference.learn(frames[:100]),
                               3.0, 10.0)
    kept = np.concatenate(runs) + 4  # the frame each kept clip scores
    # Flagged from the first covered frame to 3 s after the last (the tamper's hold before it ends).
    assert len(runs) == 2 and 100 <= flagged <= 140
    assert runs[0].tolist() == list(range(96)) and not ((kept >= 100) & (kept < 200)).any()
    assert np.all(np.diff(kept) > 0) and kept[-1] == 299
