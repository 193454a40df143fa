"""The STD model: network, losses, checkpoints."""

from vad_edge.model.network import PROFILES, STD, Outputs, Profile, Scores, build

__all__ = ["PROFILES", "STD", "Outputs", "Profile", "Scores", "build"]
