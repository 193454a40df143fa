"""Local health: /healthz (JSON), Prometheus /metrics and the event clips (/clips/<event>.mp4) over HTTP, and
systemd's sd_notify."""

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("vad_edge.health")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("vad_edge_frames_scored", "Frames scored", ["camera"], registry=r)
        self.skipped = Counter("vad_edge_clips_skipped", "Clips never scored because scoring fell behind "
                               "the camera (newer clips replaced them)", ["camera"], registry=r)
        self.events = Counter("vad_edge_events", "Events committed to the outbox", ["camera", "type"], registry=r)
        self.above_normal = Counter(
            "vad_edge_frames_above_normal_p99", "Frames whose raw score rose above the 99th percentile of the "
            "normal footage the camera's threshold was chosen on (calibration hold-out, or the model's training "
            "clips): about 1 % of vad_edge_frames_scored while the camera sees footage like it; far more and the "
            "calibration's false-alarm rate no longer holds (recalibrate on footage that includes these hours)",
            ["camera"], registry=r)
        self.score = Gauge("vad_edge_score", "Last calibrated score (1.0 = threshold)", ["camera"], registry=r)
        self.online = Gauge("vad_edge_camera_online", "1 while the camera delivers frames", ["camera"], registry=r)
        self.latency = Histogram("vad_edge_frame_latency_seconds", "Frame arrival to score", ["camera"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.outbox_depth = Gauge("vad_edge_outbox_depth", "Events waiting for a PUBACK", registry=r)
        self.outbox_dropped = Gauge("vad_edge_outbox_dropped", "Events dropped because the outbox was full",
                                    registry=r)
        self.outbox_bytes = Gauge("vad_edge_outbox_bytes", "What the outbox's files (its log included) take of "
                                  "the state disk", registry=r)
        self.events_lost = Gauge("vad_edge_events_lost", "Events neither stored nor sent (storage failed)",
                                 registry=r)
        self.precision = Gauge("vad_edge_scoring_precision", "1 for the format clips are scored in, and why",
                               ["precision", "why"], registry=r)
        self.runtime = Gauge("vad_edge_scoring_runtime", "1 for what runs the networks (torch, onnxruntime, "
                             "openvino), and why", ["runtime", "why"], registry=r)
        self.clips_kept = Gauge("vad_edge_clips_kept", "Event clips on the state disk", registry=r)
        self.clips_bytes = Gauge("vad_edge_clips_bytes", "What the event clips take of the state disk", registry=r)
        self.clips_removed = Gauge("vad_edge_clips_removed", "Clips removed, oldest first, to keep clips.max_mb and "
                                   "clips.max_age_hours", registry=r)
        self.clips_failed = Gauge("vad_edge_clips_failed", "Events whose clip could not be cut (the end event "
                                  "says why)", registry=r)
        self.mqtt_connected = Gauge("vad_edge_mqtt_connected", "1 while connected to the broker", registry=r)


class HealthServer:
    """Serves /healthz from `status()` (a dict with a boolean "healthy"), /metrics, and /clips/<name> from
    `clip_file(name)` (the clip's path, or None)."""

    def __init__(self, host: str, port: int, metrics: Metrics, status: Callable[[], dict],
                 clip_file: Callable[[str], Path | None] = lambda name: None):
        metrics_registry, get_status = metrics.registry, status

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/metrics":
                    body, code, kind = generate_latest(metrics_registry), 200, CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    state = get_status()
                    body, code, kind = json.dumps(state).encode(), 200 if state["healthy"] else 503, "application/json"
                elif self.path.startswith("/clips/") and (clip := clip_file(self.path.removeprefix("/clips/"))):
                    try:
                        body, code, kind = clip.read_bytes(), 200, "video/mp4"
                    except FileNotFoundError:  # removed for the budget meanwhile
                        body, code, kind = b"not found\n", 404, "text/plain"
                else:
                    body, code, kind = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the agent's log for the agent
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("health on http://%s:%d/healthz and /metrics", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sd_notify(message: str) -> bool:
    """Sends READY=1, WATCHDOG=1, STOPPING=1 ... to systemd when run under it (NOTIFY_SOCKET set)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify(%s) failed: %s", message, exc)
        return False


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, when the service has one."""
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 2e6 if usec and usec.isdigit() else None
