"""Per camera, the settings MQTT commands change (detection on/off, the threshold multiplier), kept across
restarts. They live in the outbox's database on the state disk: one SQLite file, written the way events are,
so a full or failing disk is met by the same handling."""

import logging

from vad_edge.agent.commands import CommandError, parse_detect, parse_multiplier
from vad_edge.agent.outbox import Outbox
from vad_edge.config import Camera

log = logging.getLogger("vad_edge.commands")


class Settings:
    """The saved settings, read at a camera's start: a stored value that fails its check is ignored with a
    warning (the configured value applies)."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox

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

    def save_detect(self, camera: str, detect: bool) -> None:
        self.outbox.put(f"detect/{camera}", "ON" if detect else "OFF")

    def save_multiplier(self, camera: str, multiplier: float) -> None:
        self.outbox.put(f"threshold/{camera}", repr(multiplier))
