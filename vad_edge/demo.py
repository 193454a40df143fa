"""`vad-edge demo`: the whole appliance on the bundled sample clip, on this machine.

Starts a local broker (mosquitto when installed, else amqtt in a process of its own), runs the agent with
the shipped `lite` model on the sample (UCSD Ped2 test clip 02: pedestrians, then a cyclist), prints every event as a
subscriber receives it, and writes an annotated MP4, a score timeline PNG and the events as JSON lines.
"""

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import paho.mqtt.client as paho

from vad_edge import config as config_module
from vad_edge.agent.runner import Agent, install_signal_handlers
from vad_edge.agent.snapshot import overlay
from vad_edge.data.sample import SAMPLE
from vad_edge.data.sources import probe
from vad_edge.watch import describe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoError(ValueError):
    """The demo cannot run (an unreadable source, no broker); the message says why."""


class LocalBroker:
    """mosquitto on a free loopback port when installed, otherwise amqtt in a process of its own
    (vad_edge.demo_broker): either way the broker never shares the agent's process, GIL or event loop."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if mosquitto:
            conf = workdir / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
            command, self.kind = [mosquitto, "-c", str(conf)], "mosquitto"
        else:
            if importlib.util.find_spec("amqtt.broker") is None:
                raise DemoError("no MQTT broker for the demo: install mosquitto (apt-get install mosquitto) "
                                "or amqtt (pip install amqtt)")
            command, self.kind = [sys.executable, "-m", "vad_edge.demo_broker", str(self.port)], "amqtt"
        # stdin: the amqtt broker exits when this pipe closes (mosquitto ignores it).
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30  # amqtt takes seconds to import on a loaded box
        while time.monotonic() < deadline and self.process.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise DemoError(f"the local {self.kind} broker did not start on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def write_timeline(path: Path, times: list[float], scores: list[float], events: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from datetime import datetime

    t0 = times[0]
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot([t - t0 for t in times], scores, lw=1.2, label="calibrated score")
    ax.axhline(1.0, color="tab:red", ls="--", lw=1, label="threshold")
    for event in events:
        if event["type"] == "end":
            start = datetime.fromisoformat(event["start_time"]).timestamp() - t0
            end = datetime.fromisoformat(event["end_time"]).timestamp() - t0
            ax.axvspan(start, end, color="tab:red", alpha=0.15)
    ax.set_xlabel("seconds into the clip")
    ax.set_ylabel("score (1 = threshold)")
    ax.set_title("vad-edge demo: score timeline (shaded: events)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out: Path, source: Path = SAMPLE, checkpoint: Path | None = None, realtime: bool = True,
             precision: str = "auto") -> dict:
    problem = probe(str(source))
    if problem:  # the agent would retry forever, as it must for a camera; the demo has nothing to show
        raise DemoError(f"cannot play {source}: {problem}")
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vad-edge-demo-"))
    broker = LocalBroker(workdir)
    print(f"broker: {broker.kind} on 127.0.0.1:{broker.port}")
    cfg = config_module.Config.model_validate({
        "device_id": "demo",
        "state_dir": str(workdir / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_max_s": 1},
        "model": {"checkpoint": str(checkpoint) if checkpoint else None, "precision": precision},
        "health": {"port": 0},
        "stats_interval": 2,
        "cameras": [{"name": "sample", "source": str(source), "realtime": realtime}],
    })

    received: list[dict] = []
    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="vad-edge-demo-viewer")
    subscriber.on_connect = lambda c, u, f, rc, p=None: c.subscribe("vad-edge/demo/cameras/+/events", qos=1)

    def show(client, userdata, message):
        event = json.loads(message.payload)
        received.append(event)
        print("event  " + describe(event), flush=True)

    subscriber.on_message = show
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()

    writer = None
    times, scores = [], []
    video_path = out / "demo.mp4"

    def on_scored(camera: str, obs) -> None:
        nonlocal writer
        label = f"{camera}  score {obs.score:5.2f}" + ("  ANOMALY" if obs.score > 1 else "")
        frame = overlay(obs.frame, obs.emap, None, label) if obs.score > 1 else obs.frame.copy()
        if obs.score <= 1:
            cv2.putText(frame, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
        writer.write(frame)
        times.append(obs.time)
        scores.append(obs.score)

    committed: list[dict] = []
    agent = Agent(cfg, on_event=committed.append, on_scored=on_scored)
    install_signal_handlers(agent)
    reader = agent.readers["sample"]
    print(f"agent: scoring {source.name} with {agent.cameras['sample'].bundle.model_info['name']} "
          f"on {agent.device} ({'real time' if realtime else 'as fast as possible'})")
    try:
        agent.run(until=lambda: reader.finished and agent.cameras["sample"].inbox.empty()
                  and agent.outbox.depth() == 0)
        deadline = time.monotonic() + 5  # the viewer gets the last acknowledged events a moment later
        while time.monotonic() < deadline and len({e["event_id"] for e in received}) < len(committed):
            time.sleep(0.05)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.stop()
        if writer is not None:
            writer.release()
        # Each event's clip, as its end names it, beside the other outputs.
        clips = [e["clip"]["file"] for e in received if e["type"] == "end" and "file" in e.get("clip", {})]
        for name in clips:
            shutil.copyfile(workdir / "state" / "clips" / name, out / name)
        shutil.rmtree(workdir, ignore_errors=True)

    (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in received))
    if times:
        write_timeline(out / "timeline.png", times, scores, received)
    written = (["demo.mp4", "timeline.png"] if times else []) + clips
    summary = {"frames_scored": len(times), "clips_skipped": agent.cameras["sample"].inbox.skipped,
               "events": len(received), "anomalies": sum(e["type"] == "start" for e in received),
               "outputs": [str(out / n) for n in [*written, "events.jsonl"]]}
    print(json.dumps(summary, indent=2))
    return summary
