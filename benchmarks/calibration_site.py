"""A labelled data set as a stand-in site for `vad-edge calibrate` (Ped2, or Ped1 for a scene the model was not
built on): calibrate on the training clips only (normal footage, no labels), then run the agent's event
rule over the test clips and measure what a site would see:
false alarms per hour on normal stretches, event-level recall (anomalous intervals that got an event),
detection delay, and the frame-level AUC of the calibrated model.

    python benchmarks/calibration_site.py [--data data/ped2] [--budget 20] [--target 1]
    python benchmarks/calibration_site.py --data data/ped1-dev --bundle B.safetensors   # measure only
    python benchmarks/calibration_site.py --data data/ped1-dev --budget 5 --budget 10 --budget 20 \
        --threads 2    # how accuracy grows with calibrate's budget: a row per budget, and a PNG against iterations

Ped2's test set has only ~6 minutes of footage and under a minute of it is normal, so its false-alarm count
is a sanity check, not a rate; the rate the threshold is built for comes from the calibration's own
hold-out (the expected false alarms per hour with its interval).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vad_edge.runtime.bundle import load_bundle
from vad_edge.agent.events import EventTracker, Observation
from vad_edge.calibrate import calibrate
from vad_edge.cpu_share import use_threads
from vad_edge.data import load_split
from vad_edge.eval import frame_metrics
from vad_edge.model import checkpoint
from vad_edge.runtime.batch import score_videos

FPS = 10.0  # the UCSD sets' frame rate


def intervals(label: np.ndarray) -> list[tuple[int, int]]:
    """Runs of 1s as (first, last) frame indices."""
    padded = np.r_[0, label, 0]
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def events_of(scores: np.ndarray, threshold: float, min_frames: int, cooldown: float) -> list[tuple[int, int, int]]:
    """The agent's event rule over one video: (first frame above, frame the start was published, last frame)."""
    tracker = EventTracker("bench", "site", min_frames, cooldown, {}, {})
    events, opened = [], None
    for i, raw in enumerate(scores):
        frame = i + 4  # a clip scores its last frame
        for event in tracker.step(Observation(frame / FPS, raw / threshold, raw, threshold, np.ones((2, 2)))):
            if event["type"] == "start":
                opened = (frame - min_frames + 1, frame)
            elif event["type"] == "end":
                events.append((*opened, frame))
    if tracker.active is not None:
        events.append((*opened, len(scores) + 3))
    return events


def site_metrics(raw: list[np.ndarray], labels: list[np.ndarray], threshold: float, min_frames: int,
                 cooldown: float) -> dict:
    """What subscribers would have seen. An event published on a normal frame is a false alarm. An anomalous
    interval is detected when an event is published inside it (delay: from its first frame to that
    publication); it is masked when no event starts inside it because one that started earlier (a false
    alarm) is still open, so subscribers never heard of it separately."""
    false_alarms, normal_frames, detected, masked, total, delays = 0, 0, 0, 0, 0, []
    for scores, label in zip(raw, labels):
        events = events_of(scores, threshold, min_frames, cooldown)
        normal_frames += int((label[4:] == 0).sum())
        false_alarms += int(sum(label[p] == 0 for _, p, _ in events))
        for x, y in intervals(label):
            total += 1
            published = [p for _, p, _ in events if x <= p <= y]
            if published:
                detected += 1
                delays.append((min(published) - x) / FPS)
            elif any(p < x <= b for _, p, b in events):
                masked += 1
    hours = normal_frames / FPS / 3600
    return {"false_alarms": false_alarms, "normal_minutes": round(hours * 60, 2),
            "false_alarms_per_hour": false_alarms / hours if hours else None,
            "anomalous_intervals": total, "detected_intervals": detected, "masked_intervals": masked,
            "event_recall": detected / total if total else None,
            "detection_delay_s_median": float(np.median(delays)) if delays else None,
            "detection_delay_s_max": float(np.max(delays)) if delays else None}


def plot_timelines(path: Path, raw: list[np.ndarray], labels: list[np.ndarray], threshold: float,
                   min_frames: int, cooldown: float) -> None:
    """One panel per test clip: calibrated score, ground-truth anomaly (shaded) and the agent's events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-len(raw) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.2 * rows), sharey=True, squeeze=False)
    for k, (ax, scores, label) in enumerate(zip(axes.flat, raw, labels)):
        t = (np.arange(len(scores)) + 4) / FPS
        for x, y in intervals(label):
            ax.axvspan(x / FPS, (y + 1) / FPS, color="tab:orange", alpha=0.25, lw=0)
        for a, _, b in events_of(scores, threshold, min_frames, cooldown):
            ax.axvspan(a / FPS, (b + 1) / FPS, ymin=0.92, ymax=1.0, color="tab:red", lw=0)
        ax.plot(t, scores / threshold, lw=0.8)
        ax.axhline(1.0, color="tab:red", ls="--", lw=0.8)
        ax.set_title(f"test {k + 1:02d}", fontsize=9)
    for ax in axes.flat[len(raw):]:
        ax.axis("off")
    fig.supxlabel("seconds (orange: labelled anomalous; red bar: agent event)")
    fig.supylabel("calibrated score (1 = threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def measure(bundle_path: Path, data: str, out: Path, site_name: str) -> dict:
    """Scores the test clips with a calibration bundle and writes what a site would have seen."""
    bundle = load_bundle(bundle_path, torch.device("cpu"))
    report = bundle.meta["calibration"]
    rule = report["event_rule"]
    test = load_split(data, "testing", bundle.model.profile.size, bundle.fps)
    labels = [v.labels for v in test]
    raw = score_videos(bundle.scorer, test, desc="scoring test clips")
    site = site_metrics(raw, labels, bundle.threshold, rule["min_event_frames"], rule["cooldown"])
    frames = frame_metrics(raw, labels)
    # The same rule at other thresholds: what a technician trades by moving it.
    sweep = {scale: site_metrics(raw, labels, bundle.threshold * scale, rule["min_event_frames"], rule["cooldown"])
             for scale in (0.8, 0.9, 1.0, 1.1, 1.25, 1.5)}
    result = {"bundle": str(bundle_path),
              "calibration": {k: report.get(k) for k in ("threshold", "threshold_method", "exceedance_clusters",
                                                         "expected_false_alarms_per_hour",
                                                         "false_alarms_per_hour_range", "training_minutes",
                                                         "training_iterations", "event_rule", "advice")},
              "test": site, "frame_auc": {k: frames[k] for k in ("auc_micro", "auc_macro", "auc_raw")},
              "threshold_sweep": {str(k): v for k, v in sweep.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{site_name}_site.json").write_text(json.dumps(result, indent=2))
    np.savez(out / f"{site_name}_test_scores.npz", *raw)
    plot_timelines(out / f"{site_name}_site.png", raw, labels, bundle.threshold, rule["min_event_frames"], rule["cooldown"])
    return result


def iterations_text(calibration: dict) -> str:
    steps = calibration.get("training_iterations")  # bundles made before it was recorded have none
    return f"{steps['pretrain']} + {steps['finetune']}" if steps else "not recorded"


def print_site(result: dict) -> None:
    c, t, f = result["calibration"], result["test"], result["frame_auc"]
    low, high = c["false_alarms_per_hour_range"]["low"], c["false_alarms_per_hour_range"]["high"]
    print("\n| measure | value |\n|---|---|")
    print(f"| threshold method (clusters) | {c['threshold_method']} ({c['exceedance_clusters']['count']}) |")
    expected = c["expected_false_alarms_per_hour"]
    print("| false alarms/h from the calibration hold-out | " +
          (f"expected {expected:.2f} (90% interval {low:.2f}-{high:.2f}) |" if expected is not None
           else f"not estimable, at most {high:.0f} (95% bound) |"))
    print(f"| false alarms on normal test stretches | {t['false_alarms']} in {t['normal_minutes']} min |")
    print(f"| event recall | {t['detected_intervals']}/{t['anomalous_intervals']} anomalous intervals "
          f"({t['masked_intervals']} masked by an earlier false alarm still open) |")
    print(f"| detection delay (to publication) median / max | {t['detection_delay_s_median']} s / "
          f"{t['detection_delay_s_max']} s |")
    print(f"| frame AUC micro / macro / raw | {f['auc_micro']:.1f} / {f['auc_macro'] or float('nan'):.1f} / "
          f"{f['auc_raw']:.1f} |")
    print(f"| training | {c['training_minutes']} min, {iterations_text(c)} iterations (autoencoder + fine-tuning) |")
    print("\n| threshold x | false alarms | detected | masked | delay median s |\n|---|---|---|---|---|")
    for scale, m in result["threshold_sweep"].items():
        print(f"| {scale} | {m['false_alarms']} | {m['detected_intervals']}/{m['anomalous_intervals']} | "
              f"{m['masked_intervals']} | {m['detection_delay_s_median']} |")


def print_budgets(budgets: list[float], results: list[dict], threads: int) -> None:
    print("\n| budget (min) | threads | training min | iterations (autoencoder + fine-tuning) | micro | macro | raw "
          "| false alarms | detected |\n|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for budget, r in zip(budgets, results):
        c, t, f = r["calibration"], r["test"], r["frame_auc"]
        print(f"| {budget:g} | {threads} | {c['training_minutes']} | {iterations_text(c)} | {f['auc_micro']:.1f} | "
              f"{f['auc_macro'] or float('nan'):.1f} | {f['auc_raw']:.1f} | {t['false_alarms']} | "
              f"{t['detected_intervals']}/{t['anomalous_intervals']} |")


def plot_budgets(path: Path, results: list[dict], title: str) -> None:
    """Frame AUC against the fine-tuning iterations each budget bought (the budget is wall time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["calibration"]["training_iterations"]["finetune"] for r in results]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (("auc_micro", "micro"), ("auc_raw", "raw")):
        ax.plot(steps, [r["frame_auc"][key] for r in results], "o-", label=label)
    ax.set(xlabel="fine-tuning iterations (batch 8)", ylabel="frame AUC (%)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/ped2")
    parser.add_argument("--base", help="base checkpoint (default: the shipped lite)")
    parser.add_argument("--bundle", help="an existing calibration bundle: skip calibrating, only measure")
    parser.add_argument("--budget", type=float, action="append",
                        help="minutes of calibration (default 20, as calibrate); repeat to compare budgets")
    parser.add_argument("--threads", type=int, help="CPU threads for calibrating (default: torch's)")
    parser.add_argument("--learn-motion", action="store_true", help="fine-tune the motion U-Net too, as calibrate's")
    parser.add_argument("--target", type=float, default=1.0, help="false alarms per hour")
    parser.add_argument("--min-event-frames", type=int, default=3)
    parser.add_argument("--cooldown", type=float, default=3.0)
    parser.add_argument("--out", default="bench-out/calibration")
    args = parser.parse_args()
    out = Path(args.out)
    site_name = Path(args.data).name  # names the bundle and the outputs: ped2, ped1-dev
    threads = use_threads(args.threads) if args.threads else torch.get_num_threads()

    if args.bundle:
        print_site(measure(Path(args.bundle), args.data, out, site_name))
        return
    budgets = args.budget or [20.0]
    base = Path(args.base) if args.base else checkpoint.shipped("lite")
    size = checkpoint.read_metadata(base)["profile"]["size"]
    train = load_split(args.data, "training", size, FPS)
    results = []
    for budget in budgets:
        where = out if len(budgets) == 1 else out / f"budget-{budget:g}"
        bundle_path = calibrate(train, base, where, site_name, budget_minutes=budget, target_per_hour=args.target,
                                min_event_frames=args.min_event_frames, cooldown=args.cooldown,
                                learn_motion=args.learn_motion)["bundle"]
        results.append(measure(Path(bundle_path), args.data, where, site_name))
        print_site(results[-1])
    if len(budgets) > 1:
        print_budgets(budgets, results, threads)
        plot_budgets(out / f"{site_name}_budgets.png", results, f"{site_name}: calibrate's budget, {threads} thread(s)")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
