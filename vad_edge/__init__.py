"""vad-edge: video anomaly detection on the edge (STD), publishing events over MQTT."""

__version__ = "0.1.0"

from vad_edge import ops  # noqa: E402  (ops needs __version__ for backend())

__all__ = ["ops", "__version__"]
