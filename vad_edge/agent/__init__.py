"""`vad-edge run`: cameras in, anomaly events out over MQTT (see the architecture's data flow)."""
