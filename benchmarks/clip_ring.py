"""What keeping a camera's clips costs, per camera: the CPU of the ring's thread (it demuxes the RTSP stream
and keeps its packets, it decodes nothing), the memory the ring holds (the default pre-roll of 5 s and a
keyframe interval), and the disk a clip takes per second and per camera-hour.

    python benchmarks/clip_ring.py [--seconds 30] [--streams h264:360x240:10 h264:1920x1080:10 ...]

Each stream is a real RTSP camera on loopback (tests/rtsp_server.py: the bundled sample scaled to the size,
a keyframe a second) in its own process; only the ring's thread is timed (/proc/self/task/<tid>/stat), so
the encoder's work is not counted. Disk per camera-hour assumes `--events-per-hour` events (default 1, the
false alarms a calibrated camera is allowed) of `--event-seconds` (default 5) each, plus the default pre- and
post-roll (5 + 3 s).
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's RTSP camera
from rtsp_helpers import RtspCamera  # noqa: E402

from vad_edge.agent.clips.packets import PacketRing  # noqa: E402

PRE_ROLL, POST_ROLL = 5.0, 3.0  # the config's defaults
TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds (user + system) the thread has used."""
    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_for(condition, what: str, ring: PacketRing, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"waited {limit:g} s for {what} (ring: {ring.reason})")
        time.sleep(0.05)


def measure(codec: str, size: str, fps: int, seconds: float, workdir: Path) -> dict:
    camera = RtspCamera(workdir / f"{codec}-{size}-{fps}", loop=True, codec=codec, encode_size=size, fps=fps).start()
    ring = PacketRing(camera.url, keep=PRE_ROLL + 2.0)
    try:
        ring.start()
        wait_for(lambda: ring.received > 0, "the first packet", ring)
        first = ring.latest()
        wait_for(lambda: ring.latest() - first >= PRE_ROLL + 4.0, "the ring to fill", ring)
        with ring._lock:  # steady state: what the ring holds between events
            held = sum(len(p.data) for p in ring._packets)
        start, cpu = ring.latest(), thread_cpu(ring)
        ring.hold("benchmark", start - PRE_ROLL)  # an event starts: its pre-roll stays
        wall = time.monotonic()
        wait_for(lambda: ring.latest() - start >= seconds, f"{seconds:g} s of stream", ring, limit=seconds * 4 + 60)
        core = (thread_cpu(ring) - cpu) / (time.monotonic() - wall)
        cut = ring.cut(start - PRE_ROLL, ring.latest(), workdir / f"{codec}-{size}.mp4")
    finally:
        ring.stop()
        camera.stop()
    return {"stream": f"{codec} {size} {fps} fps", "core": core, "held": held, "rate": cut.bytes / (cut.end - cut.start),
            "cut": cut}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each stream is timed")
    parser.add_argument("--streams", nargs="+", default=["h264:360x240:10", "h264:1920x1080:10", "h265:1920x1080:10"],
                        help="codec:WxH:fps of each camera to measure, one at a time")
    parser.add_argument("--events-per-hour", type=float, default=1.0)
    parser.add_argument("--event-seconds", type=float, default=5.0)
    args = parser.parse_args()
    clip_seconds = PRE_ROLL + args.event_seconds + POST_ROLL
    print(f"| stream | ring CPU % of a core | core-s per camera-hour | ring memory MB | clip MB/s | disk MB per "
          f"camera-hour ({args.events_per_hour:g} events of {clip_seconds:g} s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.streams:
            codec, size, fps = spec.split(":")
            row = measure(codec, size, int(fps), args.seconds, Path(tmp))
            print(f"| {row['stream']} | {100 * row['core']:.2f} | {3600 * row['core']:.0f} | {row['held'] / 1e6:.2f} "
                  f"| {row['rate'] / 1e6:.3f} | {row['rate'] * clip_seconds * args.events_per_hour / 1e6:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
