"""Per-camera schedules (cameras[].schedule): which window is in force, its edges in the box's zone across
daylight-saving changes, the overlap check, and the agent switching detect and the multiplier at the edges
on an injected clock, with a /set holding until the next edge and surviving a restart within its slot."""

import datetime as dt
import logging
import os
import zoneinfo

import pytest

from vad_edge import config
from vad_edge.agent import status
from vad_edge.agent.schedule import Schedule, box_zone, describe, describe_days, to_epoch
from vad_edge.config import Window

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def t(iso: str) -> float:
    """An instant written with its offset: 2026-03-29T06:00+02:00."""
    return dt.datetime.fromisoformat(iso).timestamp()


def local(epoch: float | None, tz=PARIS) -> str | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, tz).isoformat(timespec="minutes")


# --- the pure logic ---------------------------------------------------------------------------------------

def test_an_empty_schedule_is_never_in_force():
    slot = Schedule([], PARIS).at(t("2026-01-14T12:00+01:00"))
    assert (slot.window, slot.detect, slot.multiplier, slot.since, slot.next_edge) == (None,) * 5


def test_days_windows_past_midnight_and_24_00():
    """A winter week (no clock change): a window belongs to the day it starts on; one ending at or before
    its start ends the next day; 24:00 is the next midnight."""
    plan = Schedule([Window(days=WEEKDAYS, start="07:00", end="19:00", detect=False),
                     Window(days=["fri"], start="22:00", end="24:00", threshold_multiplier=0.5),
                     Window(days=["sat"], start="22:00", end="06:00", threshold_multiplier=0.7)], PARIS)
    expected = {  # instant: (window, detect, multiplier, since, next edge)
        "2026-01-12T06:59+01:00": (None, None, None, "2026-01-11T06:00+01:00", "2026-01-12T07:00+01:00"),
        "2026-01-12T07:00+01:00": (0, False, None, "2026-01-12T07:00+01:00", "2026-01-12T19:00+01:00"),
        "2026-01-16T19:00+01:00": (None, None, None, "2026-01-16T19:00+01:00", "2026-01-16T22:00+01:00"),
        "2026-01-16T23:59+01:00": (1, True, 0.5, "2026-01-16T22:00+01:00", "2026-01-17T00:00+01:00"),
        "2026-01-17T00:00+01:00": (None, None, None, "2026-01-17T00:00+01:00", "2026-01-17T22:00+01:00"),
        "2026-01-17T23:00+01:00": (2, True, 0.7, "2026-01-17T22:00+01:00", "2026-01-18T06:00+01:00"),
        "2026-01-18T05:59+01:00": (2, True, 0.7, "2026-01-17T22:00+01:00", "2026-01-18T06:00+01:00"),
        # Sunday 06:00: nothing until Monday 07:00; the Saturday window did not start on Sunday.
        "2026-01-18T22:30+01:00": (None, None, None, "2026-01-18T06:00+01:00", "2026-01-19T07:00+01:00"),
    }
    for when, want in expected.items():
        slot = plan.at(t(when))
        assert (slot.window, slot.detect, slot.multiplier, local(slot.since), local(slot.next_edge)) == want, when


def test_a_window_ending_at_its_start_lasts_a_day_and_back_to_back_windows_share_an_edge():
    plan = Schedule([Window(start="07:00", end="07:00", threshold_multiplier=2.0)], PARIS)
    slot = plan.at(t("2026-01-14T06:59+01:00"))
    assert slot.window == 0 and local(slot.since) == "2026-01-13T07:00+01:00"
    assert local(slot.next_edge) == "2026-01-14T07:00+01:00"  # the next day's occurrence starts there
    assert local(plan.at(t("2026-01-14T07:00+01:00")).since) == "2026-01-14T07:00+01:00"
    plan = Schedule([Window(start="22:00", end="24:00"), Window(start="00:00", end="06:00", detect=False)], PARIS)
    slot = plan.at(t("2026-01-15T00:00+01:00"))
    assert slot.window == 1 and local(slot.since) == "2026-01-15T00:00+01:00"


def test_spring_forward_in_paris():
    """2026-03-29: at 02:00 CET the clocks go to 03:00 CEST. The night is an hour shorter; a time in the gap
    is its end (03:00); a window wholly in the gap does not happen that night."""
    night = Schedule([Window(start="22:00", end="06:00", threshold_multiplier=0.7)], PARIS)
    slot = night.at(t("2026-03-29T01:59+01:00"))
    assert local(slot.since) == "2026-03-28T22:00+01:00" and local(slot.next_edge) == "2026-03-29T06:00+02:00"
    assert slot.next_edge - slot.since == 7 * 3600
    assert night.at(t("2026-03-29T05:59:59+02:00")).window == 0
    assert night.at(t("2026-03-29T06:00+02:00")).window is None

    assert to_epoch(dt.date(2026, 3, 29), 2 * 60 + 30, PARIS) == t("2026-03-29T03:00+02:00")  # 02:30: the gap's end
    assert to_epoch(dt.date(2026, 3, 29), 2 * 60, PARIS) == t("2026-03-29T03:00+02:00")
    assert to_epoch(dt.date(2026, 3, 29), 3 * 60, PARIS) == t("2026-03-29T03:00+02:00")
    assert to_epoch(dt.date(2026, 3, 29), 1 * 60 + 59, PARIS) == t("2026-03-29T01:59+01:00")

    starts_in_gap = Schedule([Window(start="02:30", end="04:00", detect=False)], PARIS)
    slot = starts_in_gap.at(t("2026-03-29T03:00+02:00"))
    assert slot.window == 0 and local(slot.since) == "2026-03-29T03:00+02:00"
    assert starts_in_gap.at(t("2026-03-29T02:59:59+02:00")).window is None  # the instant before: 01:59:59 CET
    ends_in_gap = Schedule([Window(start="01:00", end="02:30")], PARIS)
    slot = ends_in_gap.at(t("2026-03-29T01:30+01:00"))
    assert local(slot.next_edge) == "2026-03-29T03:00+02:00" and slot.next_edge - slot.since == 3600

    swallowed = Schedule([Window(days=["sun"], start="02:10", end="02:50")], PARIS)
    day = lambda d: (d, d)  # noqa: E731
    assert swallowed.occurrences(*day(dt.date(2026, 3, 29))) == []
    assert [(local(a), local(b)) for a, b, _ in swallowed.occurrences(*day(dt.date(2026, 4, 5)))] == [
        ("2026-04-05T02:10+02:00", "2026-04-05T02:50+02:00")]
    slot = swallowed.at(t("2026-03-29T12:00+02:00"))
    assert local(slot.since) == "2026-03-22T02:50+01:00" and local(slot.next_edge) == "2026-04-05T02:10+02:00"


def test_fall_back_in_paris():
    """2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET. The night is an hour longer; a time that
    happens twice is its first occurrence (summer time)."""
    night = Schedule([Window(start="22:00", end="06:00", threshold_multiplier=0.7)], PARIS)
    slot = night.at(t("2026-10-25T02:30+01:00"))  # the second 02:30
    assert local(slot.since) == "2026-10-24T22:00+02:00" and local(slot.next_edge) == "2026-10-25T06:00+01:00"
    assert slot.next_edge - slot.since == 9 * 3600

    assert to_epoch(dt.date(2026, 10, 25), 2 * 60 + 30, PARIS) == t("2026-10-25T02:30+02:00")
    repeated = Schedule([Window(start="02:30", end="04:00", detect=False)], PARIS)
    assert repeated.at(t("2026-10-25T02:29+02:00")).window is None
    slot = repeated.at(t("2026-10-25T02:10+01:00"))  # the second 02:10: inside, the window began at the first 02:30
    assert slot.window == 0 and local(slot.since) == "2026-10-25T02:30+02:00"
    assert slot.next_edge - slot.since == 2.5 * 3600
    ends_repeated = Schedule([Window(start="01:00", end="02:30")], PARIS)
    slot = ends_repeated.at(t("2026-10-25T01:00+02:00"))
    assert local(slot.next_edge) == "2026-10-25T02:30+02:00"  # the first 02:30
    assert ends_repeated.at(t("2026-10-25T02:10+01:00")).window is None  # the second 02:10 is after it


def test_a_us_zone_changes_on_its_own_dates():
    """America/New_York: forward 2026-03-08 02:00 EST -> 03:00 EDT, back 2026-11-01 02:00 EDT -> 01:00 EST
    (Paris changes weeks later and earlier)."""
    night = Schedule([Window(start="22:00", end="06:00")], NEW_YORK)
    slot = night.at(t("2026-03-08T01:00-05:00"))
    assert local(slot.since, NEW_YORK) == "2026-03-07T22:00-05:00"
    assert local(slot.next_edge, NEW_YORK) == "2026-03-08T06:00-04:00" and slot.next_edge - slot.since == 7 * 3600
    slot = night.at(t("2026-11-01T01:30-05:00"))
    assert local(slot.next_edge, NEW_YORK) == "2026-11-01T06:00-05:00" and slot.next_edge - slot.since == 9 * 3600
    assert to_epoch(dt.date(2026, 3, 8), 2 * 60 + 30, NEW_YORK) == t("2026-03-08T03:00-04:00")
    assert to_epoch(dt.date(2026, 11, 1), 1 * 60 + 30, NEW_YORK) == t("2026-11-01T01:30-04:00")
    # Paris keeps its winter time that week: the same window there is 8 hours.
    slot = Schedule([Window(start="22:00", end="06:00")], PARIS).at(t("2026-03-08T01:00+01:00"))
    assert slot.next_edge - slot.since == 8 * 3600


def test_descriptions_for_people():
    assert describe(Window(days=WEEKDAYS, start="07:00", end="19:00", detect=False)) == "mon-fri 07:00-19:00, detect off"
    assert describe(Window(start="22:00", end="06:00", threshold_multiplier=0.7)) == \
        "every day 22:00-06:00, detect on, threshold x0.7"
    assert describe_days(["sun", "sat"]) == "sat,sun"
    assert describe_days(["mon", "wed", "thu", "fri", "sun"]) == "mon,wed-fri,sun"
    assert describe_days([]) == "no day"
    plan = Schedule([Window(days=WEEKDAYS, start="07:00", end="19:00", detect=False)], PARIS)
    assert plan.describe(plan.at(t("2026-01-12T08:00+01:00"))) == "mon-fri 07:00-19:00, detect off"
    assert plan.describe(plan.at(t("2026-01-12T20:00+01:00"))) is None
    assert plan.local_iso(t("2026-03-29T06:00+02:00")) == "2026-03-29T06:00:00+02:00"


def test_the_box_zone_is_a_real_zone(tmp_path, caplog):
    """The configured name; else $TZ; else the zone /etc/localtime links to, or the file itself; else UTC,
    said once. Each knows its daylight saving (a fixed offset from astimezone() would not)."""
    assert box_zone("Europe/Paris", {}, tmp_path / "none").key == "Europe/Paris"
    assert box_zone(None, {"TZ": "America/New_York"}, tmp_path / "none").key == "America/New_York"
    assert box_zone(None, {"TZ": ":/usr/share/zoneinfo/Europe/Paris"}, tmp_path / "none").key == "Europe/Paris"
    link = tmp_path / "localtime"
    os.symlink("/usr/share/zoneinfo/Europe/Paris", link)  # dangling or not: its name is read
    assert box_zone(None, {}, link).key == "Europe/Paris"
    assert box_zone(None, {"TZ": "Not/AZone"}, link).key == "Europe/Paris"
    paris_file = next((path for folder in zoneinfo.TZPATH
                       if os.path.isfile(path := os.path.join(folder, "Europe/Paris"))), None)
    if paris_file:  # a copy, not a link: its rules under the name "localtime"
        copy = tmp_path / "copied"
        copy.write_bytes(open(paris_file, "rb").read())
        zone = box_zone(None, {}, copy)
        assert zone.key == "localtime"
        assert dt.datetime(2026, 7, 1, 12, tzinfo=zone).utcoffset() == dt.timedelta(hours=2)
        assert dt.datetime(2026, 1, 1, 12, tzinfo=zone).utcoffset() == dt.timedelta(hours=1)
    with caplog.at_level(logging.WARNING, "vad_edge.schedule"):
        assert box_zone(None, {}, tmp_path / "missing").key == "UTC"
    assert "schedules run in UTC" in caplog.text


# --- the overlap check ------------------------------------------------------------------------------------

CONFIG = """\
device_id: box
cameras:
  - name: yard
    source: rtsp://cam/yard
    schedule:
{windows}"""


def windows(*lines: str) -> str:
    return "".join(f"      - {line}\n" for line in lines)


@pytest.mark.parametrize("lines,message", [
    (('{days: [mon, tue], start: "22:00", end: "06:00"}', '{days: [wed], start: "07:00", end: "19:00"}',
      '{days: [tue], start: "05:00", end: "09:00"}'),
     "<c>:5: cameras.0.schedule: Value error, schedule windows 0 and 2 overlap on tue 05:00-06:00"),
    (('{days: [sun], start: "22:00", end: "02:00"}', '{days: [mon], start: "01:00", end: "03:00"}'),
     "schedule windows 0 and 1 overlap on mon 01:00-02:00"),  # past Sunday 24:00: Monday
    (('{start: "20:00", end: "24:00"}', '{days: [thu], start: "23:00", end: "23:30"}'),
     "schedule windows 0 and 1 overlap on thu 23:00-23:30"),
    (('{days: [fri], start: "12:00", end: "12:00"}', '{days: [sat], start: "06:00", end: "07:00"}'),
     "schedule windows 0 and 1 overlap on sat 06:00-07:00"),
    (('{days: [fri], start: "23:00", end: "02:00"}', '{days: [fri], start: "22:00", end: "24:00"}'),
     "schedule windows 0 and 1 overlap on fri 23:00-24:00"),
    (('{days: [wed], start: "20:00", end: "20:00"}', '{days: [wed], start: "23:00", end: "01:00"}'),
     "schedule windows 0 and 1 overlap on wed 23:00-thu 01:00"),
    (('{days: [], start: "20:00", end: "22:00"}',), "cameras.0.schedule.0.days: List should have at least 1 item"),
])
def test_overlapping_windows_are_refused_naming_both(lines, message):
    with pytest.raises(config.ConfigError) as err:
        config.parse(CONFIG.format(windows=windows(*lines)), "<c>")
    assert message in str(err.value)


def test_windows_that_only_touch_are_accepted():
    cfg = config.parse(CONFIG.format(windows=windows(
        '{days: [sun], start: "22:00", end: "24:00"}', '{days: [mon], start: "00:00", end: "07:00"}',
        '{days: [mon], start: "07:00", end: "07:00", detect: false}')))  # mon 07:00 to tue 07:00
    assert len(cfg.cameras[0].schedule) == 3


# --- the agent ---------------------------------------------------------------------------------------------

class Wall:
    """The agent's wall clock in these tests: it says what it is told."""

    def __init__(self, iso: str):
        self.now = t(iso)

    def __call__(self) -> float:
        return self.now


def make_agent(tmp_path, checkpoint, clock, timezone="Europe/Paris"):
    from vad_edge.agent.runner import Agent

    schedule = [{"days": WEEKDAYS, "start": "07:00", "end": "19:00", "detect": False},
                {"start": "22:00", "end": "06:00", "threshold_multiplier": 0.7}]
    return Agent(config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0}, "timezone": timezone,
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "threads": 1},
        "cameras": [{"name": "gate", "source": "rtsp://127.0.0.1:1/none", "schedule": schedule},
                    {"name": "hall", "source": "rtsp://127.0.0.1:1/none", "threshold_multiplier": 1.5}]}),
        clock=clock)


class Driver:
    """Moves the clock, runs a pass of the loop, and reads what the camera "gate" shows."""

    def __init__(self, agent, clock):
        self.agent, self.clock = agent, clock

    def at(self, iso: str) -> "Driver":
        self.clock.now = t(iso)
        self.agent.step()
        return self

    def set(self, what: str, payload: str, camera: str = "gate") -> None:
        self.agent.command(camera, what, payload)  # as MQTT's thread does; applied by the next pass
        self.agent.step()

    def settings(self, camera: str = "gate") -> tuple[bool, float]:
        state = self.agent.cameras[camera]
        return state.detect, state.multiplier

    def retained(self, what: str, camera: str = "gate"):
        return self.agent.retained._payloads.get(self.agent.topics.camera(camera, what))


def test_the_schedule_switches_at_the_edges_across_spring_forward(tmp_path, tiny_checkpoint):
    """Saturday 2026-03-28 to Monday 30 in Paris: the night window (x0.7) begins at 22:00 CET and ends at
    06:00 CEST, 7 hours on; weekdays 07:00-19:00 turn detect off. A /set between edges holds until the next."""
    clock = Wall("2026-03-28T12:00+01:00")
    agent = make_agent(tmp_path, tiny_checkpoint, clock)
    run = Driver(agent, clock)
    try:
        assert run.settings() == (True, 1.0)
        gate = status.stats(agent)["cameras"]["gate"]
        assert gate["schedule"] is None and gate["schedule_next_edge"] == "2026-03-28T22:00:00+01:00"
        assert run.at("2026-03-28T21:59:59+01:00").settings() == (True, 1.0)
        assert run.retained("threshold/state") is None  # nothing changed yet (start() publishes the first)

        assert run.at("2026-03-28T22:00+01:00").settings() == (True, 0.7)
        assert run.retained("threshold/state") == "0.7" and run.retained("detect/state") == "ON"
        gate = status.stats(agent)["cameras"]["gate"]
        assert gate["schedule"] == "every day 22:00-06:00, detect on, threshold x0.7"
        assert gate["schedule_next_edge"] == "2026-03-29T06:00:00+02:00"
        assert gate["threshold"] == pytest.approx(0.7 * agent.cameras["gate"].bundle.threshold)
        assert status.health(agent)["schedules"]["gate"] == {
            "schedule": "every day 22:00-06:00, detect on, threshold x0.7",
            "schedule_next_edge": "2026-03-29T06:00:00+02:00"}

        run.at("2026-03-29T00:30+01:00").set("threshold/set", "2.5")  # a /set inside the window
        assert run.settings() == (True, 2.5) and run.retained("threshold/state") == "2.5"
        assert run.at("2026-03-29T03:00+02:00").settings() == (True, 2.5)  # the clocks jumped: no edge
        assert run.at("2026-03-29T05:59:59+02:00").settings() == (True, 2.5)
        assert t("2026-03-29T05:59:59+02:00") - t("2026-03-28T22:00+01:00") == 7 * 3600 - 1
        assert run.at("2026-03-29T06:00+02:00").settings() == (True, 1.0)  # the camera's own
        assert run.retained("threshold/state") == "1.0"
        assert status.stats(agent)["cameras"]["gate"]["schedule"] is None

        assert run.at("2026-03-29T22:00+02:00").settings() == (True, 0.7)
        assert run.at("2026-03-30T06:00+02:00").settings() == (True, 1.0)
        assert run.at("2026-03-30T06:59:59+02:00").settings() == (True, 1.0)
        assert run.at("2026-03-30T07:00+02:00").settings() == (False, 1.0)
        assert run.retained("detect/state") == "OFF" and run.retained("status") == "disabled"
        assert status.stats(agent)["cameras"]["gate"]["schedule"] == "mon-fri 07:00-19:00, detect off"

        run.at("2026-03-30T12:00+02:00").set("detect/set", "ON")
        run.set("threshold/set", "3")
        assert run.settings() == (True, 3.0) and run.retained("detect/state") == "ON"
        assert run.at("2026-03-30T18:59:59+02:00").settings() == (True, 3.0)
        assert run.at("2026-03-30T19:00+02:00").settings() == (True, 1.0)  # leaving into no window: its own
        assert run.retained("threshold/state") == "1.0"

        run.at("2026-03-30T20:00+02:00").set("detect/set", "OFF")  # a /set outside every window
        assert run.at("2026-03-30T21:59:59+02:00").settings() == (False, 1.0)
        assert run.retained("detect/state") == "OFF"
        assert run.at("2026-03-30T22:00+02:00").settings() == (True, 0.7)
        assert run.retained("detect/state") == "ON" and run.retained("threshold/state") == "0.7"
        assert run.settings("hall") == (True, 1.5)  # a camera without a schedule is left alone
    finally:
        agent.outbox.close()


def test_the_night_window_lasts_nine_hours_when_the_clocks_go_back(tmp_path, tiny_checkpoint):
    clock = Wall("2026-10-24T21:59:59+02:00")
    agent = make_agent(tmp_path, tiny_checkpoint, clock)
    run = Driver(agent, clock)
    try:
        assert run.at("2026-10-24T21:59:59+02:00").settings() == (True, 1.0)
        assert run.at("2026-10-24T22:00+02:00").settings() == (True, 0.7)
        assert run.at("2026-10-25T02:30+01:00").settings() == (True, 0.7)  # the second 02:30
        assert run.at("2026-10-25T05:59:59+01:00").settings() == (True, 0.7)
        assert run.at("2026-10-25T06:00+01:00").settings() == (True, 1.0)
        assert t("2026-10-25T06:00+01:00") - t("2026-10-24T22:00+02:00") == 9 * 3600
        assert run.retained("threshold/state") == "1.0"
    finally:
        agent.outbox.close()


def test_a_set_survives_a_restart_within_its_slot_but_not_past_an_edge(tmp_path, tiny_checkpoint):
    """A restart is no edge: a /set made since the slot in force began is kept. One made before it was
    overridden at that edge, even though the agent was down then. A camera without a schedule keeps its
    /set for good, as before schedules."""
    def started(iso):
        clock = Wall(iso)
        return make_agent(tmp_path, tiny_checkpoint, clock), clock

    agent, clock = started("2026-03-28T23:00+01:00")  # in the night window, since 22:00
    run = Driver(agent, clock)
    run.set("threshold/set", "2.5")
    run.set("threshold/set", "2", camera="hall")
    agent.outbox.close()

    agent, clock = started("2026-03-29T05:00+02:00")  # the same night
    assert Driver(agent, clock).settings() == (True, 2.5)
    assert agent.cameras["gate"].slot.window == 1
    agent.outbox.close()

    agent, clock = started("2026-03-29T12:00+02:00")  # the night ended at 06:00 while the agent was down
    run = Driver(agent, clock)
    assert run.settings() == (True, 1.0) and run.settings("hall") == (True, 2.0)
    run.set("detect/set", "OFF")
    agent.outbox.close()

    agent, clock = started("2026-03-29T21:00+02:00")
    run = Driver(agent, clock)
    assert run.settings() == (False, 1.0)
    assert run.at("2026-03-29T22:00+02:00").settings() == (True, 0.7)  # and the next edge still applies
    agent.outbox.close()

    agent, clock = started("2026-04-06T19:30+02:00")  # a week on, just after a weekday window
    assert Driver(agent, clock).settings() == (True, 1.0) and Driver(agent, clock).settings("hall") == (True, 2.0)
    agent.outbox.close()


def test_a_set_saved_before_its_time_was_recorded_yields_to_the_schedule(tmp_path, tiny_checkpoint):
    """A value saved by an agent that did not record when (or whose time was lost) counts as older than
    the slot; without a schedule it is kept, as it always was."""
    from vad_edge.agent.outbox import Outbox

    (tmp_path / "state").mkdir()
    box = Outbox(tmp_path / "state" / "outbox.sqlite")
    for camera in ("gate", "hall"):
        box.put(f"detect/{camera}", "OFF")
        box.put(f"threshold/{camera}", "4.0")
    box.close()
    clock = Wall("2026-03-28T23:00+01:00")
    agent = make_agent(tmp_path, tiny_checkpoint, clock)
    try:
        run = Driver(agent, clock)
        assert run.settings() == (True, 0.7) and run.settings("hall") == (False, 4.0)
    finally:
        agent.outbox.close()
