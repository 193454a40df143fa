"""Live commands over MQTT (`detect/set`, `threshold/set`, `recalibrate`): their payloads checked, and the
dispatcher that applies them to a camera and saves what they set (settings.py).

Every payload is checked against its documented form before anything changes, and settings read back at
start are checked the same way: a value no person meant (`1e-320`, `"  2.5  "`, `1_000`) is refused with a
log line, never stored, never applied.
"""

import logging
import math
import re
from typing import TYPE_CHECKING, Protocol

from vad_edge.agent.outbox import StorageError

if TYPE_CHECKING:
    from vad_edge.agent.settings import Settings

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


class CommandTarget(Protocol):
    """What the commands act on: the agent's cameras, changed in its scoring loop."""

    def has_camera(self, camera: str) -> bool: ...

    def set_detect(self, camera: str, detect: bool) -> None: ...

    def set_multiplier(self, camera: str, multiplier: float) -> None: ...

    def reload(self) -> None: ...


class Dispatcher:
    """Applies one command (camera, what, payload) to `target` and saves what it set in `settings`; a command
    that fails its check is refused with a log line, one whose setting cannot be saved is applied and said."""

    def __init__(self, target: CommandTarget, settings: "Settings"):
        self.target, self.settings = target, settings
        self.handlers = {"detect/set": self._detect, "threshold/set": self._threshold,
                         "recalibrate": lambda camera, payload: self.target.reload()}

    def apply(self, camera: str, what: str, payload: str) -> None:
        if not self.target.has_camera(camera):
            log.warning("command %s for unknown camera %s ignored", shown(what), shown(camera))
            return
        handler = self.handlers.get(what)
        if handler is None:
            log.warning("unknown command %s for camera %s ignored", shown(what), camera)
            return
        try:
            handler(camera, payload)
        except CommandError as exc:
            log.warning("%s for %s refused: %s", what, camera, exc)
        except StorageError as exc:  # applied now, but a restart will not remember it
            log.error("%s for %s applied but not saved: %s", what, camera, exc)

    def _detect(self, camera: str, payload: str) -> None:
        detect = parse_detect(payload)
        self.target.set_detect(camera, detect)
        self.settings.save_detect(camera, detect)

    def _threshold(self, camera: str, payload: str) -> None:
        multiplier = parse_multiplier(payload)
        self.target.set_multiplier(camera, multiplier)
        self.settings.save_multiplier(camera, multiplier)
