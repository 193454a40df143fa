"""Datasets: frame folders (`<root>/<split>/frames/<video>/*.jpg`) or folders of video files, decoded with
OpenCV, forced to 3 channels, resized once to the model resolution and cached as uint8 (BGR)."""

from vad_edge.data.clips import ClipDataset, clip_windows
from vad_edge.data.videos import Video, dataset_fingerprint, load_split

__all__ = ["ClipDataset", "Video", "clip_windows", "dataset_fingerprint", "load_split"]
