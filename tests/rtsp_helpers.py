"""A real RTSP camera on a loopback port (tests/rtsp_server.py under the system Python), started and stopped
at will, always on the same port: the tests' and `benchmarks/pipeline.py --rtsp`'s network camera."""

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from vad_edge.demo import SAMPLE, free_port

SERVER = Path(__file__).resolve().parent / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # the one with GStreamer's bindings (python3-gi), not the venv's
STAMP_BITS, STAMP_BLOCK = 16, 12  # as rtsp_server.py writes them


def server_missing() -> str | None:
    """Why this machine cannot run the RTSP server, or None (the packages: .ci/missing-packages)."""
    check = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'x265enc', 'rtph265pay'))")
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    done = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True)
    if done.returncode:
        return ("GStreamer's RTSP server is missing (apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad): " + done.stderr.strip().splitlines()[-1])
    return None


def sample_frames(workdir: Path, frames: int | None = None) -> tuple[Path, str]:
    """The bundled sample (or its first `frames`) as packed BGR bytes for the server, and its WxH."""
    capture = cv2.VideoCapture(str(SAMPLE))
    decoded = []
    while frames is None or len(decoded) < frames:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    path = workdir / "sample.bgr"
    path.write_bytes(np.stack(decoded).tobytes())
    height, width = decoded[0].shape[:2]
    return path, f"{width}x{height}"


def read_stamp(frame: np.ndarray) -> int:
    """The frame number rtsp_server.py --stamp wrote into the frame's top rows."""
    blocks = frame[:STAMP_BLOCK, :STAMP_BITS * STAMP_BLOCK].reshape(STAMP_BLOCK, STAMP_BITS, STAMP_BLOCK, 3)
    bits = blocks.mean(axis=(0, 2, 3)) > 128
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


class RtspCamera:
    """rtsp://[user:password@]127.0.0.1:<port>/cam; the arguments are rtsp_server.py's options."""

    def __init__(self, workdir: Path, user: str | None = None, password: str | None = None,
                 frames: int | None = None, **options):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        raw, size = sample_frames(workdir, frames)
        self.command = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--frames", str(raw), "--size", size]
        if user:
            self.command += ["--user", user, "--password", password]
        for name, value in options.items():
            flag = f"--{name.replace('_', '-')}"
            self.command += [flag] if value is True else [flag, str(value)]
        auth = f"{user}:{password}@" if user else ""
        self.url = f"rtsp://{auth}127.0.0.1:{self.port}/cam"
        self.process = None

    def start(self) -> "RtspCamera":
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True,
                                        stderr=open(self.workdir / "rtsp-server.log", "a"))
        line = self.process.stdout.readline()  # "ready" once it listens; nothing if it died
        if line.strip() != "ready":
            self.process.wait(10)
            log = (self.workdir / "rtsp-server.log").read_text()
            raise RuntimeError(f"the RTSP server did not start: {log.strip()[-500:]}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
            self.process.stdout.close()

    def send_times(self) -> dict[int, float]:
        """With stamp=LOG: each frame number's wall time when the server sent it."""
        lines = Path(self.command[self.command.index("--stamp") + 1]).read_text().split("\n")
        return {int(n): float(t) for n, t in (line.split() for line in lines if line.count(" ") == 1)}


def busy_loops(count: int = 2) -> list[subprocess.Popen]:
    """Shell busy loops competing for the cores, as other jobs on the box would; kill them after."""
    return [subprocess.Popen([shutil.which("sh"), "-c", "while :; do :; done"]) for _ in range(count)]
