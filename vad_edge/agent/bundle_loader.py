"""Every camera's bundle (runtime/bundle.py), read at start and read again on request."""

import logging
import math
import threading
import time
from collections.abc import Callable

import torch

from vad_edge.config import Config
from vad_edge.runtime.bundle import Bundle, camera_bundle_path, load_bundle

log = logging.getLogger("vad_edge.agent")

RELOAD_INTERVAL = 2.0  # seconds between two reloads of the bundles, however many are asked for


class BundleLoader:
    """Every camera's bundle, read at start and again on request (SIGHUP, the MQTT `recalibrate` command).
    Requests are merged and served at most every `interval` seconds by a thread of its own (`serve`), never
    by the scoring loop: each pass's bundles go to `deliver`, for the loop to swap in."""

    def __init__(self, config: Config, device: torch.device, deliver: Callable[[dict], None], threads: int):
        """threads: what a graph runtime scores on (cpu_share.graph_threads)."""
        self.config, self.device, self.deliver, self.threads = config, device, deliver, threads
        self.interval = RELOAD_INTERVAL
        self._wanted = threading.Event()
        self._warned: set[str] = set()

    def load_all(self) -> dict[str, Bundle | ValueError]:
        """Every camera's bundle read from disk, or why it could not be (cameras sharing a file share it)."""
        loaded, by_path = {}, {}
        for cam in self.config.cameras:
            path = camera_bundle_path(self.config, cam)
            if str(path) not in by_path:
                try:
                    bundle = load_bundle(path, self.device, self.config.model.precision, self.config.model.runtime,
                                         self.threads)
                except ValueError as exc:
                    by_path[str(path)] = exc
                else:
                    by_path[str(path)] = bundle
                    if (mismatch := bundle.precision_mismatch()) and mismatch not in self._warned:
                        self._warned.add(mismatch)  # said once; stats and /metrics keep saying it
                        log.warning("%s", mismatch)
            loaded[cam.name] = by_path[str(path)]
        return loaded

    def request(self) -> None:
        self._wanted.set()

    def serve(self, stop: threading.Event) -> None:
        """The loader thread's body, until `stop` is set."""
        last = -math.inf
        while not stop.is_set():
            if not self._wanted.wait(0.5):
                continue
            if stop.wait(max(0.0, last + self.interval - time.monotonic())):
                return
            self._wanted.clear()  # requests from now on ask for another pass
            last = time.monotonic()
            self.deliver(self.load_all())
