"""Ped2 as a stand-in site for `vad-edge calibrate`: calibrate on the training clips only (normal footage,
no labels), then run the agent's event rule over the test clips and measure what a site would see:
false alarms per hour on normal stretches, event-level recall (anomalous intervals that got an event),
detection delay, and the frame-level AUC of the calibrated model.

    python benchmarks/calibration_ped2.py [--data ../shared/data/ped2] [--budget 10] [--target 1]
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from vad_edge.agent.bundle import load_bundle
from vad_edge.agent.events import EventTracker, Observation
from vad_edge.calibrate import calibrate
from vad_edge.data import load_split
from vad_edge.eval import frame_metrics
from vad_edge.model import checkpoint
from vad_edge.model.scoring import score_videos

FPS = 10.0  # UCSD Ped2 frame rate


def intervals(label: np.ndarray) -> list[tuple[int, int]]:
    """Runs of 1s as (first, last) frame indices."""
    padded = np.r_[0, label, 0]
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def events_of(scores: np.ndarray, threshold: float, min_frames: int, cooldown: float) -> list[tuple[int, int]]:
    """The agent's event rule over one video: (first frame, last frame) of each event."""
    tracker = EventTracker("bench", "ped2", min_frames, cooldown, {}, {})
    events, start = [], None
    for i, raw in enumerate(scores):
        frame = i + 4  # a clip scores its last frame
        for event in tracker.step(Observation(frame / FPS, raw / threshold, raw, threshold, np.ones((2, 2)))):
            if event["type"] == "start":
                start = frame - min_frames + 1
            elif event["type"] == "end":
                events.append((start, frame))
    if tracker.active is not None:
        events.append((start, len(scores) + 3))
    return events


def site_metrics(raw: list[np.ndarray], labels: list[np.ndarray], threshold: float, min_frames: int,
                 cooldown: float) -> dict:
    false_alarms, normal_frames, detected, total, delays = 0, 0, 0, 0, []
    for scores, label in zip(raw, labels):
        events = events_of(scores, threshold, min_frames, cooldown)
        normal_frames += int((label[4:] == 0).sum())
        truth = intervals(label)
        for a, b in events:
            if not any(a <= y and x <= b for x, y in truth):
                false_alarms += 1
        for x, y in truth:
            total += 1
            hits = [a for a, b in events if a <= y and x <= b]
            if hits:
                detected += 1
                delays.append(max(0, min(hits) - x) / FPS)
    hours = normal_frames / FPS / 3600
    return {"false_alarms": false_alarms, "normal_minutes": round(hours * 60, 2),
            "false_alarms_per_hour": false_alarms / hours if hours else None,
            "anomalous_intervals": total, "detected_intervals": detected,
            "event_recall": detected / total if total else None,
            "detection_delay_s_median": float(np.median(delays)) if delays else None,
            "detection_delay_s_max": float(np.max(delays)) if delays else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ped2")
    parser.add_argument("--base", help="base checkpoint (default: the shipped lite)")
    parser.add_argument("--budget", type=float, default=10.0, help="minutes of fine-tuning")
    parser.add_argument("--target", type=float, default=1.0, help="false alarms per hour")
    parser.add_argument("--min-event-frames", type=int, default=3)
    parser.add_argument("--cooldown", type=float, default=3.0)
    parser.add_argument("--out", default="bench-out/calibration")
    args = parser.parse_args()

    base = Path(args.base) if args.base else checkpoint.shipped("lite")
    size = checkpoint.read_metadata(base)["profile"]["size"]
    train = load_split(args.data, "training", size)
    report = calibrate(train, base, Path(args.out), "ped2", budget_minutes=args.budget,
                       target_per_hour=args.target, min_event_frames=args.min_event_frames,
                       cooldown=args.cooldown, fps=FPS)
    bundle = load_bundle(report["bundle"], torch.device("cpu"))
    test = load_split(args.data, "testing", size)
    labels = [v.labels for v in test]
    raw = score_videos(bundle.model, test, desc="scoring test clips")
    site = site_metrics(raw, labels, bundle.threshold, args.min_event_frames, args.cooldown)
    frames = frame_metrics(raw, labels)
    result = {"calibration": {k: report[k] for k in ("threshold", "threshold_method", "exceedance_clusters",
                                                     "expected_false_alarms_per_hour", "false_alarms_per_hour_90ci",
                                                     "training_minutes")},
              "test": site, "frame_auc": {k: frames[k] for k in ("auc_micro", "auc_macro", "auc_raw")}}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "ped2_site.json").write_text(json.dumps(result, indent=2))
    c, t, f = result["calibration"], site, result["frame_auc"]
    low, high = c["false_alarms_per_hour_90ci"]
    print("\n| measure | value |\n|---|---|")
    print(f"| threshold method (clusters) | {c['threshold_method']} ({c['exceedance_clusters']}) |")
    print(f"| expected false alarms/h (90% interval), from training hold-out | {c['expected_false_alarms_per_hour']:.2f} ({low:.2f}-{high:.2f}) |")
    print(f"| false alarms on normal test stretches | {t['false_alarms']} in {t['normal_minutes']} min = {t['false_alarms_per_hour']:.1f}/h |")
    print(f"| event recall | {t['detected_intervals']}/{t['anomalous_intervals']} anomalous intervals |")
    print(f"| detection delay median / max | {t['detection_delay_s_median']} s / {t['detection_delay_s_max']} s |")
    print(f"| frame AUC micro / macro / raw | {f['auc_micro']:.1f} / {f['auc_macro'] or float('nan'):.1f} / {f['auc_raw']:.1f} |")
    print(f"| fine-tuning | {c['training_minutes']} min |")


if __name__ == "__main__":
    main()
