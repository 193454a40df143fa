"""Retained state (availability aside): each camera's status, anomaly, settings and snapshot, and Home
Assistant's discovery. Remembered here and published again on every (re)connect, so a broker that restarted
or a subscriber that comes later finds the box's true state."""

from vad_edge.agent.mqtt import MqttClient


class RetainedState:
    def __init__(self, mqtt: MqttClient):
        self.mqtt = mqtt
        self._payloads: dict[str, bytes | str] = {}
        mqtt.replays.append(self._replay)

    def set(self, topic: str, payload: bytes | str) -> None:
        """Publishes `payload` retained on `topic` now if connected, and again on every reconnect."""
        with self.mqtt.lock:  # against a connect replaying the remembered state at this moment
            self._payloads[topic] = payload
            if self.mqtt.connected:
                self.mqtt.publish(topic, payload, qos=1, retain=True)

    def _replay(self) -> None:
        for topic, payload in self._payloads.items():
            self.mqtt.publish(topic, payload, qos=1, retain=True)
