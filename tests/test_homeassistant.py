"""Home Assistant MQTT discovery against a real mosquitto: the configs appear, use only keys Home Assistant
documents for their platform, point at topics that exist and change, and go away with their camera."""

import json

import jinja2
import pytest

from mqtt_helpers import Subscriber, retained, wait_for
from test_agent import RunningAgent, camera, synthetic_video, write_config

# The keys Home Assistant's MQTT integration documents for each platform (home-assistant.io/integrations/
# <platform>.mqtt), and those every MQTT entity takes.
COMMON = {"name", "unique_id", "device", "availability", "availability_mode", "availability_topic",
          "availability_template", "payload_available", "payload_not_available", "icon", "object_id",
          "default_entity_id", "enabled_by_default", "entity_category", "json_attributes_topic",
          "json_attributes_template", "encoding", "origin", "platform"}
DOCUMENTED = {
    "binary_sensor": {"state_topic", "payload_on", "payload_off", "device_class", "value_template", "qos",
                      "expire_after", "force_update", "off_delay"},
    "sensor": {"state_topic", "value_template", "state_class", "unit_of_measurement", "device_class", "qos",
               "suggested_display_precision", "expire_after", "force_update", "last_reset_value_template", "options"},
    "image": {"image_topic", "content_type", "image_encoding", "url_topic", "url_template"},
    "switch": {"command_topic", "state_topic", "payload_on", "payload_off", "state_on", "state_off", "optimistic",
               "retain", "value_template", "command_template", "device_class", "qos"},
    "number": {"command_topic", "state_topic", "min", "max", "step", "mode", "unit_of_measurement", "device_class",
               "value_template", "command_template", "optimistic", "retain", "payload_reset", "qos"},
}
DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version", "hw_version",
               "serial_number", "suggested_area", "configuration_url", "via_device"}
AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}


def configs(sub: Subscriber) -> dict[str, dict]:
    """The latest discovery config per topic (an empty payload: None)."""
    latest = {}
    for topic, payload, _ in list(sub.messages):
        if topic.startswith("homeassistant/"):
            latest[topic] = json.loads(payload) if payload else None
    return latest


def test_discovery_configs_point_at_live_state_and_leave_with_their_camera(tmp_path, broker, tiny_checkpoint):
    door = synthetic_video(tmp_path / "door.mp4", 40, [(8, 30)])  # an event: the snapshot exists too
    yard = synthetic_video(tmp_path / "yard.mp4", 30, [])
    always = [{"start": "00:00", "end": "00:00", "threshold_multiplier": 1.0}]  # a window every day, all day
    path = write_config(tmp_path, broker.port, tiny_checkpoint,
                        [camera("door", door, loop=True, schedule=always), camera("yard", yard, loop=True)])
    sub = Subscriber(broker.port, "#")
    running = RunningAgent(path)
    try:
        wait_for(lambda: len([c for c in configs(sub).values() if c]) == 14, 60, "14 discovery configs")
        found = configs(sub)
        device_blocks = set()
        for topic, payload in found.items():
            prefix, platform, object_id, leaf = topic.split("/")
            assert prefix == "homeassistant" and leaf == "config" and platform in DOCUMENTED
            assert set(payload) <= COMMON | DOCUMENTED[platform], set(payload) - COMMON - DOCUMENTED[platform]
            assert set(payload["device"]) <= DEVICE_KEYS and payload["unique_id"] == object_id
            assert all(set(a) <= AVAILABILITY_KEYS for a in payload["availability"])
            device_blocks.add(json.dumps(payload["device"], sort_keys=True))
        assert len(device_blocks) == 1  # one device: the box

        # Each door entity by its key (its object id's end): the platform's name, or "schedule" (a second
        # sensor) and "tamper" (a second binary_sensor, of the problem class).
        door_cfg = {t.split("/")[2].split("_door_", 1)[1]: c for t, c in found.items() if "_door_" in t}
        assert sorted(door_cfg) == ["binary_sensor", "image", "number", "schedule", "sensor", "switch", "tamper"]
        assert [t.split("/")[1] for t in found if t.endswith("_door_schedule/config")] == ["sensor"]
        assert [t.split("/")[1] for t in found if t.endswith("_door_tamper/config")] == ["binary_sensor"]
        assert door_cfg["tamper"]["device_class"] == "problem" and len(door_cfg["tamper"]["availability"]) == 1
        # Every topic an entity reads is one the agent publishes: wait for each to carry a message.
        for platform, cfg in door_cfg.items():
            for key in ("state_topic", "image_topic"):
                if key in cfg:
                    wait_for(lambda t=cfg[key]: any(m[0] == t for m in sub.messages), 60, f"{platform} {key}")
            for availability in cfg["availability"]:
                topic = availability["topic"]
                wait_for(lambda t=topic: any(m[0] == t for m in sub.messages), 60, f"{platform} availability {topic}")
        # The availability templates read the agent's words as Home Assistant's.
        template = jinja2.Template(door_cfg["switch"]["availability"][0]["value_template"])
        assert [template.render(value=v) for v in ("online", "offline", "stopped")] == ["online", "offline", "offline"]
        # The score sensor's template finds the camera's calibrated score in a real stats message (before the
        # first clip is scored it renders "None", which Home Assistant's MQTT sensor reads as unknown).
        def scored_stats():
            for t, p, _ in reversed(list(sub.messages)):
                if t == door_cfg["sensor"]["state_topic"] and json.loads(p)["cameras"]["door"]["score"] is not None:
                    return json.loads(p)
        wait_for(scored_stats, 60, "a stats message with the door's score")
        stats = scored_stats()
        score = jinja2.Template(door_cfg["sensor"]["value_template"]).render(value_json=stats)
        assert float(score) == pytest.approx(stats["cameras"]["door"]["score"])
        # The schedule sensor reads the window in force from the same message, and when it next changes; it
        # stays available while the camera's detect is off (the agent's availability alone).
        schedule = door_cfg["schedule"]
        assert schedule["state_topic"] == schedule["json_attributes_topic"] == door_cfg["sensor"]["state_topic"]
        assert jinja2.Template(schedule["value_template"]).render(value_json=stats) == \
            "every day 00:00-00:00, detect on, threshold x1"
        attributes = json.loads(jinja2.Template(schedule["json_attributes_template"]).render(value_json=stats))
        assert attributes == {"next_edge": stats["cameras"]["door"]["schedule_next_edge"]} and attributes["next_edge"]
        assert jinja2.Template(schedule["value_template"]).render(
            value_json={"cameras": {"door": {"schedule": None}}}) == "no window"
        assert [a["topic"] for a in schedule["availability"]] == [door_cfg["switch"]["availability"][0]["topic"]]

        # The switch and the number change the state they show.
        sub.client.publish(door_cfg["switch"]["command_topic"], door_cfg["switch"]["payload_off"], qos=1)
        sub.client.publish(door_cfg["number"]["command_topic"], "2.5", qos=1)
        wait_for(lambda: b"OFF" in [p for t, p, _ in sub.messages if t == door_cfg["switch"]["state_topic"]], 60,
                 "the switch's state OFF")
        wait_for(lambda: b"2.5" in [p for t, p, _ in sub.messages if t == door_cfg["number"]["state_topic"]], 60,
                 "the number's state 2.5")
        assert door_cfg["number"]["min"] == 0.05 and door_cfg["number"]["max"] == 20.0
    finally:
        running.stop()

    # The yard camera leaves the config: its seven entries are cleared, the door's stay.
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", door, loop=True)])
    running = RunningAgent(path)
    try:
        wait_for(lambda: sum(1 for t, c in configs(sub).items() if "_yard_" in t and c is None) == 7, 60,
                 "the yard's entries cleared")
        left = retained(broker.port, "homeassistant/#")
        assert len(left) == 7 and all("_door_" in t for t in left)
    finally:
        running.stop()
        sub.close()


def test_discovery_can_be_turned_off_and_clears_what_it_announced(tmp_path, broker, tiny_checkpoint):
    video = synthetic_video(tmp_path / "door.mp4", 30, [])
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, loop=True)],
                        homeassistant={"prefix": "ha"})
    running = RunningAgent(path)
    try:
        wait_for(lambda: len(retained(broker.port, "ha/#")) == 7, 60, "7 configs under the chosen prefix")
    finally:
        running.stop()
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, loop=True)],
                        homeassistant={"discovery": False})
    sub = Subscriber(broker.port, "ha/#")
    running = RunningAgent(path)
    try:
        wait_for(lambda: sum(1 for _, p, _ in sub.messages if p == b"") == 7, 60, "the 7 configs cleared")
    finally:
        running.stop()
        sub.close()
