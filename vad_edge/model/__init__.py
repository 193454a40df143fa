"""The STD model: networks, losses, fusion, object-speed term, checkpoint format. Imports nothing above it.

The networks' names are imported on first use: `vad_edge.model.names` stays torch-free."""

import importlib

__all__ = ["PROFILES", "STD", "Outputs", "Profile", "Scores", "build"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("vad_edge.model.network"), name)
    raise AttributeError(f"module 'vad_edge.model' has no attribute {name!r}")
