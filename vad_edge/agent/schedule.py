"""Per camera, weekly windows that set detect and the threshold multiplier (`cameras[].schedule`): which
window is in force at a given instant, since when, and when the next edge comes. Pure logic on epoch
seconds; the agent (runner.py) applies a slot when it changes.

Windows are in the box's wall time (`timezone`, default the box's own zone). Each occurrence is built as a
local date and time in the zone and converted to UTC, so a 22:00-06:00 window lasts 7 h on the night the
clocks go forward and 9 h on the night they go back. Two corner rules, for starts and ends alike:

- a time that does not exist (the spring-forward gap: 02:30 on 2026-03-29 in Europe/Paris) is the end of
  the gap, the instant the clocks jump (03:00 local); a window wholly inside the gap does not happen that day;
- a time that happens twice (the fall-back hour: 02:30 on 2026-10-25 in Europe/Paris) is its first
  occurrence (02:30 summer time, before the clocks go back).
"""

import datetime as dt
import logging
import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from vad_edge.config import DAYS, Window

log = logging.getLogger("vad_edge.schedule")

UTC = dt.timezone.utc
LOCALTIME = Path("/etc/localtime")


def box_zone(name: str | None, environ=None, localtime: Path = LOCALTIME) -> zoneinfo.ZoneInfo:
    """The zone schedules are in: `name` (config `timezone`), else the box's own: $TZ, else /etc/localtime
    (the name its symlink points at, or the file itself), else UTC with a warning. Always a ZoneInfo: the
    fixed offset `datetime.now().astimezone()` gives knows nothing of daylight saving."""
    if name:
        return zoneinfo.ZoneInfo(name)
    environ = os.environ if environ is None else environ
    tz = environ.get("TZ", "").lstrip(":")
    if tz:
        key = tz.split("zoneinfo/", 1)[-1]  # TZ=:/usr/share/zoneinfo/Europe/Paris names a file
        try:
            return zoneinfo.ZoneInfo(key)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            log.warning("TZ=%s is not a zone this box knows; trying %s", tz, localtime)
    try:
        target = os.readlink(localtime)
    except OSError:
        target = None
    if target and "zoneinfo/" in target:
        try:
            return zoneinfo.ZoneInfo(target.split("zoneinfo/", 1)[-1])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open(localtime, "rb") as f:  # a copied file, not a link: its rules, with no name
            return zoneinfo.ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        log.warning("cannot tell this box's time zone (no TZ, no readable %s): schedules run in UTC; set "
                    "timezone in the config", localtime)
        return zoneinfo.ZoneInfo("UTC")


@dataclass(frozen=True)
class Slot:
    """What the schedule says at an instant: the window in force (its index in the camera's schedule, None
    outside every window), the detect and multiplier it sets (None: the camera's own), `since` the edge that
    began it and `next_edge` the one that ends it (epoch seconds; None for an empty schedule)."""
    window: int | None
    detect: bool | None
    multiplier: float | None
    since: float | None
    next_edge: float | None


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def to_epoch(day: dt.date, minutes: int, tz: zoneinfo.ZoneInfo) -> float:
    """Local wall time `minutes` after midnight of `day` (up to 1440: the next midnight) as epoch seconds,
    by the rules above: a time in the spring-forward gap is the gap's end, a repeated time its first pass."""
    day, minutes = day + dt.timedelta(days=minutes // 1440), minutes % 1440
    wall = dt.datetime(day.year, day.month, day.day, minutes // 60, minutes % 60)
    first = wall.replace(tzinfo=tz)  # fold=0: a repeated time's first pass; in a gap, the offset before it
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant.timestamp()
    # In the gap: fold=1 reads it with the offset after, an instant before the jump; fold=0 one at or after.
    # The jump is the first instant whose wall time is at or past `wall` (transitions fall on whole seconds).
    low = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    high = int(instant.timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if dt.datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return float(high)


class Schedule:
    """A camera's windows in a zone. `at(now)` gives the slot in force; the agent asks again at its
    `next_edge`."""

    def __init__(self, windows: list[Window], tz: zoneinfo.ZoneInfo):
        self.windows, self.tz = list(windows), tz
        self._spans = []  # (days as weekday numbers, start minute, end minute after the start day's midnight)
        for window in self.windows:
            start, end = _minutes(window.start), _minutes(window.end)
            if end <= start:  # at or before the start: the next day
                end += 1440
            self._spans.append(({DAYS.index(d) for d in window.days}, start, end))

    def __bool__(self) -> bool:
        return bool(self.windows)

    def occurrences(self, first: dt.date, last: dt.date) -> list[tuple[float, float, int]]:
        """(start, end, window index) of every window starting on a local date from `first` to `last`, in
        epoch seconds, in time order; one that the gap swallows whole is left out."""
        out = []
        day = first
        while day <= last:
            for index, (days, start, end) in enumerate(self._spans):
                if day.weekday() in days:
                    begins, ends = to_epoch(day, start, self.tz), to_epoch(day, end, self.tz)
                    if ends > begins:
                        out.append((begins, ends, index))
            day += dt.timedelta(days=1)
        return sorted(out)

    def at(self, now: float) -> Slot:
        if not self.windows:
            return Slot(None, None, None, None, None)
        today = dt.datetime.fromtimestamp(now, self.tz).date()
        # A window lasts at most a day and each comes back within a week: 8 days either side hold the edges
        # before and after `now`.
        spans = self.occurrences(today - dt.timedelta(days=8), today + dt.timedelta(days=8))
        edges = sorted({t for begins, ends, _ in spans for t in (begins, ends)})
        since = max((t for t in edges if t <= now), default=None)
        next_edge = min((t for t in edges if t > now), default=None)
        for begins, ends, index in spans:
            if begins <= now < ends:
                window = self.windows[index]
                return Slot(index, window.detect, window.threshold_multiplier, since, next_edge)
        return Slot(None, None, None, since, next_edge)

    def describe(self, slot: Slot) -> str | None:
        """The slot's window for people, e.g. "mon-fri 07:00-19:00, detect off"; None outside every window."""
        return None if slot.window is None else describe(self.windows[slot.window])

    def local_iso(self, epoch: float | None) -> str | None:
        """An instant as ISO 8601 in the schedule's zone, with its offset (2026-03-29T06:00:00+02:00)."""
        return None if epoch is None else dt.datetime.fromtimestamp(epoch, self.tz).isoformat(timespec="seconds")


def describe_days(days: list[str]) -> str:
    """mon-fri, sat,sun, mon,wed,fri, every day: runs of three or more days (mon to sun) joined by a dash."""
    numbers = sorted({DAYS.index(d) for d in days})
    if len(numbers) == 7:
        return "every day"
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][-1] == n - 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = []
    for run in runs:
        parts += [f"{DAYS[run[0]]}-{DAYS[run[-1]]}"] if len(run) >= 3 else [DAYS[n] for n in run]
    return ",".join(parts) or "no day"


def describe(window: Window) -> str:
    """One window for people: "mon-fri 07:00-19:00, detect off", "every day 22:00-06:00, threshold x0.7"."""
    what = ["detect on" if window.detect else "detect off"]
    if window.threshold_multiplier is not None:
        what.append(f"threshold x{window.threshold_multiplier:g}")
    return f"{describe_days(window.days)} {window.start}-{window.end}, {', '.join(what)}"
