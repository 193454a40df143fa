"""Live commands over MQTT (`detect/set`, `threshold/set`, `recalibrate`) and the settings they persist.

Every payload is checked against its documented form before anything changes, and settings read back at
start are checked the same way: a value no person meant (`1e-320`, `"  2.5  "`, `1_000`) is refused with a
log line, never stored, never applied.
"""

import logging
import math
import re

from vad_edge.agent.outbox import Outbox
from vad_edge.config import Camera

log = logging.getLogger("vad_edge.commands")

THRESHOLD_MULTIPLIER_RANGE = (0.05, 20.0)  # x the calibrated threshold: from 20x more alerts to 20x fewer
_PLAIN_NUMBER = re.compile(r"(\d+(\.\d*)?|\.\d+)")  # what a person types: 2, 2.5, .5; no signs, exponents, _
SHOWN_CHARACTERS = 64


class CommandError(ValueError):
    """A command payload or stored setting outside its documented form; the message says what was expected."""


def shown(payload: str) -> str:
    """A payload fit for one log line: escaped, and cut to SHOWN_CHARACTERS with its full length said."""
    text = repr(payload[:SHOWN_CHARACTERS])
    return text if len(payload) <= SHOWN_CHARACTERS else f"{text}... ({len(payload)} characters)"


def parse_detect(payload: str) -> bool:
    if payload not in ("ON", "OFF"):
        raise CommandError(f"expected ON or OFF, got {shown(payload)}")
    return payload == "ON"


def parse_multiplier(payload: str) -> float:
    low, high = THRESHOLD_MULTIPLIER_RANGE
    value = float(payload) if _PLAIN_NUMBER.fullmatch(payload) else math.nan
    if not low <= value <= high:
        raise CommandError(f"expected a plain number from {low:g} to {high:g}, got {shown(payload)}")
    return value


class Settings:
    """Per camera: detection on/off and the threshold multiplier, kept in the outbox database so that
    commands survive a restart. A stored value that fails its check is ignored with a warning (the
    configured value applies)."""

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
