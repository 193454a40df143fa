"""What a clean stop could not write to a full state disk, kept in the runtime directory for the next start.

The outbox's reserve carries a full-disk outage of hundreds of events (outbox.py). Should even the reserve
run out, a stop is left holding three things the database cannot take:
- `unsent`: events neither stored nor acknowledged by the broker (the broker down as well);
- `delivered`: acknowledgements it could not record, events the broker has that are still in the outbox;
- `ended`: ends that went out from memory while their camera's open record stayed in the outbox.
Without the last two the next start sent the delivered events again, and a second end ("agent restarted")
for events that had ended. The three go to one small JSON file on another filesystem, the runtime directory
(systemd's RuntimeDirectory=, a tmpfs), and the next start applies it to the outbox in one transaction that
also records the spill's id, so a start that dies half-way never applies it twice. A tmpfs survives a
restart of the agent, not a reboot of the box: the stop line says what was kept there.

The file is trusted only in a directory of this user's that nobody else can write to, and only when it is
this user's own: what it holds is published to the broker.
"""

import hashlib
import json
import logging
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vad_edge.agent.events import anomaly_of

log = logging.getLogger("vad_edge.agent")

VERSION = 1


@dataclass
class Spill:
    state_dir: str
    unsent: list[tuple[str, dict]] = field(default_factory=list)  # (topic, event), oldest first
    delivered: list[tuple[int, str]] = field(default_factory=list)  # (seq, event_id) still in the outbox
    ended: list[tuple[str, str]] = field(default_factory=list)  # (camera, event_id of its end)
    published: list[str] = field(default_factory=list)  # unsent events that went out unacknowledged: replays
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __bool__(self) -> bool:
        return bool(self.unsent or self.delivered or self.ended)

    def ended_anomalies(self) -> set[str]:
        """The anomalies whose end went out or is kept here: the next start must not end them again."""
        ends = [event["event_id"] for _, event in self.unsent if event["type"] == "end"]
        return {anomaly_of(event_id) for event_id in ends + [end for _, end in self.ended]}

    def summary(self) -> str:
        return (f"{len(self.unsent)} event(s) not yet stored, {len(self.delivered)} acknowledgement(s) and "
                f"{len(self.ended)} end(s) sent from memory")


def runtime_dir() -> Path | None:
    """Where the spill lives: systemd's RuntimeDirectory= ($RUNTIME_DIRECTORY), else $XDG_RUNTIME_DIR/vad-edge,
    else /run/vad-edge for root; None for anyone else (a world-writable /tmp is no place for it)."""
    if systemd := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(systemd.split(":")[0])  # systemd lists one per RuntimeDirectory= entry
    if user := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(user) / "vad-edge"
    return Path("/run/vad-edge") if os.geteuid() == 0 else None


class SpillFile:
    """The spill of one state directory: `spill-<hash of the state dir>.json` in the runtime directory."""

    def __init__(self, state_dir: Path):
        self.state_dir = str(state_dir.resolve())
        directory = runtime_dir()
        digest = hashlib.sha256(self.state_dir.encode()).hexdigest()[:16]
        self.path = directory / f"spill-{digest}.json" if directory else None

    def where(self) -> str:
        return str(self.path) if self.path else "nowhere (no runtime directory: set XDG_RUNTIME_DIR)"

    def _private_dir(self) -> None:
        """Creates the directory (0700) or checks it is this user's alone; OSError naming what is wrong."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise OSError(f"{directory} is not a directory of this user's that only it can write to")

    def write(self, spill: Spill) -> None:
        """Replaces the file with `spill`, atomically and fsynced; OSError when it cannot."""
        if self.path is None:
            raise OSError("there is no runtime directory to keep them in (set XDG_RUNTIME_DIR)")
        self._private_dir()
        body = json.dumps({"version": VERSION, "id": spill.id, "state_dir": self.state_dir,
                           "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unsent": spill.unsent,
                           "delivered": spill.delivered, "ended": spill.ended,
                           "published": spill.published})
        partial = self.path.with_name(self.path.name + ".part")
        partial.unlink(missing_ok=True)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            partial.replace(self.path)
        finally:
            partial.unlink(missing_ok=True)

    def read(self) -> Spill | None:
        """The spill the last stop left, or None. One that cannot be trusted or read is set aside by name
        (the agent still starts)."""
        if self.path is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a symlink (ELOOP), unreadable
            log.error("the spill %s cannot be read (%s): ignored", self.path, exc)
            return None
        with os.fdopen(fd) as f:
            try:
                self._private_dir()
                if os.fstat(f.fileno()).st_uid != os.geteuid():
                    raise OSError(f"{self.path} is not this user's file")
            except OSError as exc:  # somebody else's: left where it is, unread
                log.error("SPILL IGNORED: %s; what the last stop kept there is not sent", exc)
                return None
            try:
                return self._parse(json.load(f))
            except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
                aside = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(self.path, aside)
                log.error("SPILL IGNORED: %s cannot be read (%s); moved to %s. What the last stop kept in it is "
                          "not sent.", self.path, exc, aside)
                return None

    def _parse(self, data: dict) -> Spill:
        if data.get("version") != VERSION or data.get("state_dir") != self.state_dir:
            raise ValueError(f"expected version {VERSION} for {self.state_dir}")
        unsent = [(str(topic), dict(event)) for topic, event in data["unsent"]]
        for _, event in unsent:
            if not all(isinstance(event.get(key), str) for key in ("event_id", "type", "camera")):
                raise ValueError("an unsent event has no event_id, type or camera")
        return Spill(self.state_dir, unsent, [(int(seq), str(event_id)) for seq, event_id in data["delivered"]],
                     [(str(camera), str(end)) for camera, end in data["ended"]],
                     [str(event_id) for event_id in data["published"]], str(data["id"]))

    def remove(self) -> None:
        if self.path:
            self.path.unlink(missing_ok=True)
