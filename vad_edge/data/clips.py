"""5-frame clips over decoded videos."""

import numpy as np
import torch

from vad_edge.data.videos import Video

CLIP_LENGTH = 5


def clip_windows(videos: list[Video]) -> list[tuple[int, int]]:
    """(video index, first frame) of every clip; the clip starting at t is scored at its last frame t + 4."""
    return [(v, t) for v, video in enumerate(videos) for t in range(len(video.frames) - CLIP_LENGTH + 1)]


class ClipDataset(torch.utils.data.Dataset):
    """uint8 [5,H,W,3] windows (BGR); `vad_edge.ops.prepare_clip` turns a batch into the model's input."""

    def __init__(self, videos: list[Video]):
        self.videos = videos
        self.windows = clip_windows(videos)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> torch.Tensor:
        v, t = self.windows[index]
        return torch.from_numpy(np.ascontiguousarray(self.videos[v].frames[t : t + CLIP_LENGTH]))
