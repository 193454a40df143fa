"""Per camera, the settings MQTT commands change (detection on/off, the threshold multiplier), kept across
restarts. They live in the outbox's database on the state disk: one SQLite file, written the way events are,
so a full or failing disk is met by the same handling."""

import logging
import time

from vad_edge.agent.commands import CommandError, parse_detect, parse_multiplier
from vad_edge.agent.outbox import Outbox
from vad_edge.config import Camera

log = logging.getLogger("vad_edge.commands")


class Settings:
    """The saved settings, read at a camera's start: a stored value that fails its check is ignored with a
    warning (the configured value applies). Each saved value keeps when it was set (`<key>/at`, epoch
    seconds by `clock`): a camera's schedule overrides a /set made before its current slot began."""

    def __init__(self, outbox: Outbox, clock=time.time):
        self.outbox, self.clock = outbox, clock

    def _stored(self, key: str, parse, default):
        stored = self.outbox.get(key)
        if stored is None:
            return default
        try:
            return parse(stored)
        except CommandError as exc:
            log.warning("saved setting %s ignored (%s); using the configured %r", key, exc, default)
            return default

    def detect(self, camera: Camera) -> bool:
        return self._stored(f"detect/{camera.name}", parse_detect, camera.enabled)

    def multiplier(self, camera: Camera) -> float:
        return self._stored(f"threshold/{camera.name}", parse_multiplier, camera.threshold_multiplier)

    def saved_at(self, what: str, camera: str) -> float | None:
        """When the saved `what` ("detect" or "threshold") of `camera` was set; None if never, or by a
        version that did not record it."""
        stored = self.outbox.get(f"{what}/{camera}/at")
        try:
            return float(stored) if stored is not None else None
        except ValueError:
            return None

    def save_detect(self, camera: str, detect: bool) -> None:
        self.outbox.put(f"detect/{camera}", "ON" if detect else "OFF")
        self.outbox.put(f"detect/{camera}/at", repr(self.clock()))  # after the value: a lost time reads as older

    def save_multiplier(self, camera: str, multiplier: float) -> None:
        self.outbox.put(f"threshold/{camera}", repr(multiplier))
        self.outbox.put(f"threshold/{camera}/at", repr(self.clock()))
