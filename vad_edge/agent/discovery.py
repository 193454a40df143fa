"""Home Assistant MQTT discovery: each camera's entities appear in Home Assistant with no YAML, as Frigate's
do. Per camera, retained under <prefix>/<platform>/<object id>/config:

- binary_sensor "anomaly": an event is open (cameras/<cam>/anomaly, ON/OFF); its attributes are the last
  event's clip (cameras/<cam>/clip), `link` the URL that opens it (health.public_url);
- sensor "score": the calibrated score, 1 = the threshold (from the stats message);
- image "snapshot": the peak frame of the last event with its anomaly map (cameras/<cam>/snapshot, JPEG);
- switch "detect": scoring on or off (detect/set -> detect/state);
- number "threshold multiplier": 0.05 to 20 times the calibrated threshold (threshold/set -> threshold/state);
- sensor "schedule": the schedule window in force ("mon-fri 07:00-19:00, detect off", or "no window"), its
  attribute `next_edge` when that changes (from the stats message). Available while the agent is online,
  whatever the camera: a window that turns detect off must not hide it;
- binary_sensor "tamper": the camera itself is covered, moved, out of focus or frozen (cameras/<cam>/tamper/state,
  ON/OFF; the last tamper event's reason and detail as attributes). Available while the agent is online.

Every entity is available while the agent is online and its camera too, and all belong to one device, the
box. A camera removed from the config has its entries cleared (empty retained payloads): the cameras that
were announced are remembered in <state_dir>/homeassistant.json.
"""

import json
import logging
from pathlib import Path

import vad_edge
from vad_edge.agent.commands import THRESHOLD_MULTIPLIER_RANGE
from vad_edge.agent.mqtt import Topics
from vad_edge.config import Config

log = logging.getLogger("vad_edge.discovery")

PLATFORMS = ("binary_sensor", "sensor", "image", "switch", "number")
# Each entity by its key (the last part of its object id) and its platform: a platform's first entity has the
# platform's name for key (the object ids published before the schedule sensor came stay as they were).
ENTITIES = {**{platform: platform for platform in PLATFORMS}, "schedule": "sensor", "tamper": "binary_sensor"}
ONLINE = "{{ 'online' if value == 'online' else 'offline' }}"  # 'stopped' and 'disabled' read as offline


def object_id(device_id: str, camera: str, key: str) -> str:
    return f"vad_edge_{device_id}_{camera}_{key}"


def config_topic(prefix: str, device_id: str, camera: str, key: str) -> str:
    return f"{prefix}/{ENTITIES[key]}/{object_id(device_id, camera, key)}/config"


def entities(config: Config, topics: Topics, camera: str, model: str) -> dict[str, dict]:
    """{config topic: discovery payload} of one camera's entities (ENTITIES)."""
    device = {"identifiers": [f"vad_edge_{config.device_id}"], "name": f"vad-edge {config.device_id}",
              "manufacturer": "vad-edge", "model": model, "sw_version": vad_edge.__version__}
    common = {
        "device": device,
        "availability": [{"topic": topics.availability, "value_template": ONLINE},
                         {"topic": topics.camera(camera, "status"), "value_template": ONLINE}],
        "availability_mode": "all",
    }
    low, high = THRESHOLD_MULTIPLIER_RANGE
    payloads = {
        "binary_sensor": {"name": f"{camera} anomaly", "state_topic": topics.camera(camera, "anomaly"),
                          "payload_on": "ON", "payload_off": "OFF", "device_class": "problem",
                          "json_attributes_topic": topics.camera(camera, "clip")},  # the last clip and its link
        "sensor": {"name": f"{camera} score", "state_topic": topics.stats,
                   "value_template": f"{{{{ value_json.cameras['{camera}'].score }}}}",
                   "state_class": "measurement", "suggested_display_precision": 2, "icon": "mdi:chart-bell-curve"},
        "image": {"name": f"{camera} snapshot", "image_topic": topics.camera(camera, "snapshot"),
                  "content_type": "image/jpeg"},
        "switch": {"name": f"{camera} detect", "command_topic": topics.camera(camera, "detect/set"),
                   "state_topic": topics.camera(camera, "detect/state"), "payload_on": "ON", "payload_off": "OFF",
                   "icon": "mdi:cctv"},
        "number": {"name": f"{camera} threshold multiplier", "command_topic": topics.camera(camera, "threshold/set"),
                   "state_topic": topics.camera(camera, "threshold/state"), "min": low, "max": high, "step": 0.05,
                   "mode": "box", "icon": "mdi:tune"},
        "schedule": {"name": f"{camera} schedule", "state_topic": topics.stats,
                     "value_template": f"{{{{ value_json.cameras['{camera}'].schedule or 'no window' }}}}",
                     "json_attributes_topic": topics.stats,
                     "json_attributes_template": (f"{{{{ {{'next_edge': value_json.cameras['{camera}']"
                                                  f".schedule_next_edge}} | tojson }}}}"),
                     "icon": "mdi:calendar-clock"},
        "tamper": {"name": f"{camera} tamper", "state_topic": topics.camera(camera, "tamper/state"),
                   "payload_on": "ON", "payload_off": "OFF", "device_class": "problem",
                   "json_attributes_topic": topics.camera(camera, "tamper")},  # the last one's reason, detail
    }
    for platform in ("binary_sensor", "switch", "number", "tamper"):  # state and commands sent at QoS 1
        payloads[platform]["qos"] = 1
    out = {config_topic(config.homeassistant.prefix, config.device_id, camera, key):
           {**payload, **common, "unique_id": object_id(config.device_id, camera, key)}
           for key, payload in payloads.items()}
    # The schedule says what turns detect off, and a tamper may take the camera offline: both are available
    # whenever the agent is, not only while the camera scores.
    for key in ("schedule", "tamper"):
        entity = out[config_topic(config.homeassistant.prefix, config.device_id, camera, key)]
        entity["availability"] = entity["availability"][:1]
    return out


def messages(config: Config, topics: Topics, model: str) -> dict[str, str]:
    """The retained discovery messages to publish now: every camera's entities (if discovery is on), and
    empty payloads that clear the entries of cameras announced before but gone (or all, if it is off)."""
    record = config.state_dir / "homeassistant.json"
    announced = _read(record)
    current = {c.name: config.homeassistant.prefix for c in config.cameras} if config.homeassistant.discovery else {}
    out: dict[str, str] = {}
    for camera, prefix in announced.items():
        if current.get(camera) != prefix:
            for key in ENTITIES:
                out[config_topic(prefix, config.device_id, camera, key)] = ""
            log.info("Home Assistant: clearing the entities of camera %s", camera)
    for camera in current:
        out.update({topic: json.dumps(payload) for topic, payload in entities(config, topics, camera, model).items()})
    if current != announced:
        try:
            record.write_text(json.dumps(current))
        except OSError as exc:  # the state folder's trouble is reported elsewhere; discovery still goes out
            log.warning("cannot record the announced cameras in %s: %s", record, exc)
    return out


def _read(record: Path) -> dict[str, str]:
    try:
        data = json.loads(record.read_text())
        return {str(k): str(v) for k, v in data.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, AttributeError, OSError):
        log.warning("%s is unreadable: entities of removed cameras may stay in Home Assistant", record)
        return {}
