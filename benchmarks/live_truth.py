"""Do alerts stay true when the box falls behind? The real agent, in real time, with and without CPU-bound
processes beside it (`sh -c 'while :; do :; done'`, one per --load).

Two scenes per load:
- the bundled sample (Ped2 test clip 02: pedestrians, then a cyclist from frame 94, 9.4 s): when do events
  start, relative to the cyclist?
- a normal clip (default: Ped2 training clip 01, no anomaly) looped for --minutes: any event is a false
  alarm; the distribution of the calibrated score should not depend on the load.

Prints a markdown table and writes a PNG (score distributions, sample timelines) into --out.

    python benchmarks/live_truth.py [--load 2] [--minutes 5] [--normal clip.mp4] [--out bench-out/live-truth]
"""

import argparse
import json
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

from vad_edge.agent.runner import Agent
from vad_edge.config import Config
from vad_edge.demo import SAMPLE, LocalBroker

SAMPLE_ANOMALY_FROM = 9.4  # s: the cyclist enters at frame 94 of Ped2 test clip 02 (its labels)
DEFAULT_NORMAL = Path(__file__).resolve().parents[1] / "data" / "ped2-video" / "training" / "01.mp4"


def play(source: Path, seconds: float | None, checkpoint: str | None, runtime: str = "auto") -> dict:
    """The agent on one real-time camera; until the file ends (seconds=None) or for `seconds` of looping."""
    workdir = Path(tempfile.mkdtemp(prefix="vad-edge-truth-"))
    broker = LocalBroker(workdir)
    cfg = Config.model_validate({
        "device_id": "truth", "state_dir": str(workdir / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port}, "health": {"port": 0},
        "model": {"checkpoint": checkpoint, "runtime": runtime},
        "cameras": [{"name": "cam", "source": str(source), "loop": seconds is not None}],
    })
    scored, events = [], []
    agent = Agent(cfg, on_event=events.append, on_scored=lambda cam, obs: scored.append((obs.time, obs.score)))
    reader, state = agent.readers["cam"], agent.cameras["cam"]
    first = {}

    def until():
        if scored and "t" not in first:
            first["t"] = scored[0][0] - 0.4  # the first clip ends at frame 4
        if seconds is None:
            return reader.finished and state.inbox.empty()
        return bool(scored) and scored[-1][0] - first["t"] >= seconds

    try:
        agent.run(until=until)
    finally:
        broker.stop()
    t0 = first.get("t", 0.0)
    starts = [datetime.fromisoformat(e["start_time"]).timestamp() - t0 for e in events if e["type"] == "start"]
    return {"times": np.array([t - t0 for t, _ in scored]), "scores": np.array([s for _, s in scored]),
            "starts": starts, "skipped": state.inbox.skipped, "restarts": reader.window_restarts,
            "threads": f"{state.bundle.scorer.runtime} {state.bundle.scorer.threads()}, torch {agent.threads}"}


def with_load(processes: int, run):
    busy = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(processes)]
    try:
        return run()
    finally:
        for p in busy:
            p.kill()
            p.wait()


def plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, line) = plt.subplots(1, 2, figsize=(11, 3.4))
    for (scene, load), r in results.items():
        label = f"{'unloaded' if load == 0 else f'{load} busy loops'}"
        if scene == "normal":
            hist.hist(r["scores"], bins=60, range=(0, 1.5), histtype="step", density=True, lw=1.4, label=label)
        else:
            line.plot(r["times"], r["scores"], ".-", ms=3, lw=0.8, label=f"{label}: {len(r['scores'])} clips")
    hist.axvline(1.0, color="tab:red", ls="--", lw=1)
    hist.set(title="normal clip, looped: calibrated score", xlabel="score (1 = threshold)", ylabel="density")
    line.axvline(SAMPLE_ANOMALY_FROM, color="k", ls=":", lw=1, label="cyclist enters")
    line.axhline(1.0, color="tab:red", ls="--", lw=1)
    line.set(title="bundled sample in real time", xlabel="seconds into the clip", ylabel="score")
    hist.legend(fontsize=8)
    line.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=int, default=2, help="CPU-bound processes beside the agent in the loaded runs")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the normal clip loops")
    parser.add_argument("--normal", type=Path, default=DEFAULT_NORMAL, help="a normal clip (no anomaly)")
    parser.add_argument("--checkpoint", help="model or calibration bundle (default: shipped lite)")
    parser.add_argument("--runtime", default="auto", help="model.runtime (default: auto, as the agent)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/live-truth"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results = {}
    for load in (0, args.load):
        results[("sample", load)] = with_load(load, lambda: play(SAMPLE, None, args.checkpoint, args.runtime))
        results[("normal", load)] = with_load(load, lambda: play(args.normal, args.minutes * 60, args.checkpoint,
                                                                 args.runtime))

    print("| scene | load | agent threads | clips scored | clips skipped | window restarts | events "
          "| score p50 / p90 / p99 / max |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    summary = {}
    for (scene, load), r in results.items():
        q = np.quantile(r["scores"], [0.5, 0.9, 0.99, 1.0]) if len(r["scores"]) else [np.nan] * 4
        starts = ", ".join(f"{s:.1f} s" for s in r["starts"]) or "none"
        if scene == "sample":
            early = sum(s < SAMPLE_ANOMALY_FROM for s in r["starts"])
            starts = f"starts at {starts} ({early} before the cyclist)"
        else:
            starts = f"{len(r['starts'])} in {args.minutes:g} min"
        print(f"| {scene} | {load} | {r['threads']} | {len(r['scores'])} | {r['skipped']} | {r['restarts']} | {starts} "
              f"| {' / '.join(f'{v:.2f}' for v in q)} |")
        summary[f"{scene}-load{load}"] = {"clips": len(r["scores"]), "skipped": r["skipped"],
                                          "restarts": r["restarts"], "event_starts_s": r["starts"],
                                          "score_quantiles": [float(v) for v in q]}
    normal = [results[("normal", load)]["scores"] for load in (0, args.load)]
    if all(len(s) for s in normal):
        from scipy.stats import ks_2samp

        ks = ks_2samp(*normal)
        print(f"\nnormal clip, unloaded vs loaded scores: Kolmogorov-Smirnov D = {ks.statistic:.3f} "
              f"(p = {ks.pvalue:.2g}), medians {np.median(normal[0]):.3f} vs {np.median(normal[1]):.3f}")
        summary["ks_normal"] = {"D": float(ks.statistic), "p": float(ks.pvalue)}
    (args.out / "live_truth.json").write_text(json.dumps(summary, indent=2))
    plot(args.out / "live_truth.png", results)
    print(f"\nwrote {args.out / 'live_truth.png'} and live_truth.json")


if __name__ == "__main__":
    main()
