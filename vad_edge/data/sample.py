"""The bundled sample clip (UCSD Ped2 test clip 02: pedestrians, then a cyclist, 180 frames at 10 fps): the
demo plays it, and the runtime checks an exported graph on its real clips before it scores a camera."""

from pathlib import Path

import numpy as np

from vad_edge.data.sampling import sample_indices
from vad_edge.data.videos import native_fps, read_video_file

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"


def sample_windows(size: int, fps: float, count: int) -> np.ndarray:
    """`count` 5-frame windows spread evenly over the sample at the model's `fps` and side: uint8
    [count, 5, size, size, 3] (BGR)."""
    frames = read_video_file(SAMPLE, size)
    frames = frames[sample_indices(len(frames), native_fps(SAMPLE), fps)]
    starts = np.linspace(0, len(frames) - 5, count).round().astype(int)
    return np.stack([frames[s:s + 5] for s in starts])
