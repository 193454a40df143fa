"""Synthetic footage for tests and demos: small shapes drifting slowly over a textured background (normal),
and a large, fast, bright block crossing the scene during an injected anomaly interval."""

import json
from pathlib import Path

import cv2
import numpy as np


def make_frames(count: int, size: int = 64, anomaly: tuple[int, int] | list[tuple[int, int]] | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 BGR frames [count,size,size,3], int8 labels [count]); anomaly = (first, last) frame, inclusive,
    or a list of such intervals."""
    intervals = [anomaly] if isinstance(anomaly, tuple) else list(anomaly or [])
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(60, 120, (size, size, 3), dtype=np.uint8), (0, 0), size / 16)
    walkers = [(rng.uniform(0, size), rng.uniform(0, size), rng.uniform(-0.6, 0.6), rng.uniform(0.3, 1.0))
               for _ in range(3)]
    side = max(2, size // 12)
    frames = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = np.zeros(count, dtype=np.int8)
    for t in range(count):
        frame = background.copy()
        for x0, y0, vx, vy in walkers:  # pedestrians: small, slow, wrapping around
            x, y = int(x0 + vx * t) % size, int(y0 + vy * t) % size
            cv2.rectangle(frame, (x, y), (x + side, y + 2 * side), (40, 40, 40), -1)
        start = next((a for a, b in intervals if a <= t <= b), None)
        if start is not None:  # a "vehicle": big, bright, fast
            labels[t] = 1
            x = int((t - start) * size / 6) % size
            cv2.rectangle(frame, (x, size // 3), (x + size // 3, size // 3 + size // 4), (30, 220, 250), -1)
        frames[t] = frame
    return frames, labels


def write_frame_folder(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), frame)


def write_video(path: Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_dataset(root: Path, size: int = 64, train_videos: int = 3, test_videos: int = 2,
                  frames: int = 40) -> Path:
    """A Ped2-shaped dataset: training/frames (normal), testing/frames with one anomaly each, labels.json."""
    root = Path(root)
    labels = {}
    for i in range(train_videos):
        write_frame_folder(root / "training" / "frames" / f"{i + 1:02d}", make_frames(frames, size, seed=i)[0])
    for i in range(test_videos):
        name = f"{i + 1:02d}"
        start = frames // 2
        video, label = make_frames(frames, size, anomaly=(start, start + frames // 4), seed=100 + i)
        write_frame_folder(root / "testing" / "frames" / name, video)
        labels[name] = label.tolist()
    (root / "labels.json").write_text(json.dumps(labels))
    return root
