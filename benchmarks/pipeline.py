"""End-to-end agent throughput and latency: the bundled sample clip looping on 1 and 4 cameras, a local
broker, the real agent (readers, batching, kernels, outbox, MQTT).

Two modes per camera count:
- unpaced: files fed as fast as the agent takes them: frames/s per stream and in total;
- paced: each camera at 10 fps, like real cameras: frame-arrival-to-score latency p50/p95 (events are
  committed and handed to MQTT in the same step), with CPU use and peak memory of the process.

--rtsp: the cameras are network cameras instead, each a real RTSP server (tests/rtsp_server.py: GStreamer,
H.264, on loopback) streaming the sample on a loop at 10 fps; besides the above, the age of each scored
frame from the moment its server sent it (stamped into the frame) to its score, p50/p95/max, so that
FFmpeg's buffering is counted; each camera count with the event clips off and on (each camera's stream kept
on a second connection, agent/clips/packets.py). --busy N runs N shell busy loops beside the agent for every row.
--where: four paced cameras without, then with zones (an ignore zone and a sensitive one each) and tamper checks.

    python benchmarks/pipeline.py [--seconds 20] [--checkpoint model.safetensors] [--device cpu]
                                  [--runtime auto|torch|onnxruntime|openvino] [--precision auto] [--rtsp]
                                  [--threads N] [--busy N] [--where]
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vad_edge.agent.runner import Agent
from vad_edge.config import Config
from vad_edge.demo import SAMPLE, LocalBroker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's RTSP camera
from rtsp_helpers import RtspCamera, busy_loops, read_stamp  # noqa: E402


# What --where gives each camera: a wall to ignore and the walkway twice as sensitive.
ZONES = [{"name": "wall", "points": [[0.8, 0.0], [1.0, 0.0], [1.0, 0.3], [0.8, 0.3]], "ignore": True},
         {"name": "walkway", "points": [[0.0, 0.52], [1.0, 0.52], [1.0, 0.85], [0.0, 0.85]],
          "threshold_multiplier": 0.5}]


def measure(cameras: int, paced: bool, seconds: float, checkpoint: str | None, device: str,
            runtime: str = "torch", precision: str = "auto", rtsp: list[RtspCamera] | None = None,
            clips: bool = True, where: bool | None = None, threads: int = 0) -> dict:
    """where: None, the config's defaults; False, no zones and no tamper checks; True, both."""
    workdir = Path(tempfile.mkdtemp(prefix="vad-edge-bench-"))
    broker = LocalBroker(workdir)
    sources = [c.url for c in rtsp] if rtsp else [str(SAMPLE)] * cameras
    cfg = Config.model_validate({
        "device_id": "bench", "state_dir": str(workdir / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port}, "health": {"port": 0},
        "model": {"checkpoint": checkpoint, "device": device, "runtime": runtime, "precision": precision,
                  "threads": threads},
        "cameras": [{"name": f"cam{i}", "source": source, "loop": True, "realtime": paced,
                     "clip": {"enabled": clips}, **({} if where is None else {
                         "zones": ZONES if where else [], "tamper": {"enabled": where}})}
                    for i, source in enumerate(sources)],
    })
    scored = []  # (camera index, the frame's number stamped by its RTSP server, wall time of its score)

    def on_scored(camera: str, obs) -> None:
        scored.append((int(camera[3:]), read_stamp(obs.frame), time.time()))

    agent = Agent(cfg, on_scored=on_scored if rtsp else None)
    warmup = 3.0
    marks = {}

    def until():
        now = time.monotonic()
        # Warm-up: from every camera's first score (an RTSP camera takes seconds to connect).
        if "first" not in marks and all(s.frames for s in agent.cameras.values()):
            marks["first"] = now
        if "start" not in marks and "first" in marks and now - marks["first"] > warmup:
            marks["start"] = now
            marks["frames"] = {n: s.frames for n, s in agent.cameras.items()}
            marks["skipped"] = sum(s.inbox.skipped for s in agent.cameras.values())
            marks["withheld"] = sum(s.withheld for s in agent.cameras.values())
            marks["cpu"] = time.process_time()
            for s in agent.cameras.values():
                s.latencies.clear()
            scored.clear()
        return "start" in marks and now - marks["start"] > seconds

    try:
        agent.run(until=until)
    finally:
        broker.stop()
    wall = time.monotonic() - marks["start"]
    frames = {n: s.frames - marks["frames"][n] for n, s in agent.cameras.items()}
    skipped = sum(s.inbox.skipped for s in agent.cameras.values()) - marks["skipped"]
    withheld = sum(s.withheld for s in agent.cameras.values()) - marks["withheld"]
    latencies = np.concatenate([np.asarray(s.latencies) for s in agent.cameras.values()]) * 1e3
    sent = [c.send_times() for c in rtsp or []]
    ages = np.array([at - sent[i][number] for i, number, at in scored if number in sent[i]]) * 1e3
    where_label = "" if where is None else f", zones and tamper {'on' if where else 'off'}"
    return {
        "cameras": cameras, "mode": (f"RTSP 10 fps, clips {'on' if clips else 'off'}" if rtsp else
                                     "paced 10 fps" if paced else "unpaced") + where_label,
        "age_ms": (np.percentile(ages, 50), np.percentile(ages, 95), ages.max()) if len(ages) else None,
        "fps_per_stream": np.mean(list(frames.values())) / wall, "fps_total": sum(frames.values()) / wall,
        "latency_p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "latency_p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
        "skipped_percent": 100 * skipped / max(1, skipped + sum(frames.values())),
        "withheld_percent": 100 * withheld / max(1, withheld + skipped + sum(frames.values())),
        "cpu_percent": 100 * (time.process_time() - marks["cpu"]) / wall,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(agent.device), "model": agent.cameras["cam0"].bundle.model_info["name"],
        "scoring": f"{agent.cameras['cam0'].bundle.scorer.runtime}, {agent.precision.name}, "
                   f"{agent.cameras['cam0'].bundle.scorer.threads()} thread(s), torch {agent.threads}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--checkpoint", help="default: the shipped lite model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", default="auto", help="model.runtime: auto (the agent's default), torch, "
                                                          "onnxruntime or openvino")
    parser.add_argument("--precision", default="auto", help="model.precision")
    parser.add_argument("--threads", type=int, default=0, help="model.threads (0: the agent's default)")
    parser.add_argument("--rtsp", action="store_true", help="RTSP cameras (a real server each) instead of files")
    parser.add_argument("--busy", type=int, default=0, help="shell busy loops running beside the agent")
    parser.add_argument("--where", action="store_true", help="four paced cameras without, then with zones and "
                                                             "tamper checks")
    args = parser.parse_args()
    loops = busy_loops(args.busy)
    try:
        if args.where:
            rows = [measure(4, True, args.seconds, args.checkpoint, args.device, args.runtime, args.precision,
                            where=where, threads=args.threads) for where in (False, True)]
        elif args.rtsp:
            rows = [measure_rtsp(n, args, clips) for n in (1, 4) for clips in (False, True)]
        else:
            rows = [measure(n, paced, args.seconds, args.checkpoint, args.device, args.runtime, args.precision,
                            threads=args.threads) for n in (1, 4) for paced in (False, True)]
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    print(f"\n{rows[0]['model']} on {rows[0]['device']} ({rows[0]['scoring']}), {args.seconds:.0f} s per row, "
          f"{args.busy} busy loop(s) beside (python {sys.version.split()[0]})\n")
    print("| cameras | mode | fps / stream | fps total | latency p50 ms | latency p95 ms | frame age p50 / p95 / max ms "
          "| clips skipped % | clips kept as tampered % | CPU % | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        # Unpaced, a frame waits behind the whole file-reader queue by design: its latency means nothing.
        latency = (f"{r['latency_p50_ms']:.0f} | {r['latency_p95_ms']:.0f}" if r["mode"] != "unpaced" else "— | —")
        age = " / ".join(f"{a:.0f}" for a in r["age_ms"]) if r["age_ms"] else "—"
        print(f"| {r['cameras']} | {r['mode']} | {r['fps_per_stream']:.1f} | {r['fps_total']:.1f} | {latency} | "
              f"{age} | {r['skipped_percent']:.0f} | {r['withheld_percent']:.0f} | {r['cpu_percent']:.0f} | "
              f"{r['max_rss_mb']:.0f} |")
    print("\npeak RSS is the process's peak so far (rows run in order in one process); latency: from the frame's "
          "arrival in the agent; frame age: from its RTSP server sending it")


def measure_rtsp(cameras: int, args, clips: bool) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="vad-edge-bench-rtsp-"))
    servers = [RtspCamera(workdir / f"cam{i}", loop=True, stamp=workdir / f"cam{i}" / "sent.log").start()
               for i in range(cameras)]
    try:
        return measure(cameras, True, args.seconds, args.checkpoint, args.device, args.runtime, args.precision,
                       rtsp=servers, clips=clips, threads=args.threads)
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
