"""Reading a dataset split into memory: one uint8 array [T,H,W,3] (BGR, model resolution) per video."""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vad_edge.data.sampling import sample_indices

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"}


class DatasetError(ValueError):
    """A dataset folder, video or label file that cannot be used; the message names it."""


@dataclass
class Video:
    name: str
    frames: np.ndarray  # uint8 [T,H,W,3], BGR, resized to the model resolution
    labels: np.ndarray | None = None  # int8 [T], 1 = anomalous frame
    mask_dir: Path | None = None  # pixel masks, one image per frame of the source, when the dataset has them
    source: Path = field(default_factory=Path)
    indices: np.ndarray | None = None  # source frame of each kept frame, when sampled to the model's rate


def _frame_key(path: Path):
    """Numeric file names sort numerically (2.jpg before 10.jpg), others lexicographically."""
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def list_frames(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_frame_key)


def resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Square resize, aspect not kept (as the authors do); area filtering when shrinking."""
    shrinking = frame.shape[0] > size or frame.shape[1] > size
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Any OpenCV image as 3-channel BGR (grayscale is replicated, alpha dropped)."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def read_frame_folder(folder: Path, size: int) -> np.ndarray:
    paths = list_frames(folder)
    if not paths:
        raise DatasetError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    frames = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(f"{path}: not a readable image")
        frames.append(resize(as_bgr(image), size))
    return np.stack(frames)


def read_video_file(path: Path, size: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetError(f"{path}: OpenCV cannot open this video")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(resize(as_bgr(frame), size))
    finally:
        capture.release()
    if not frames:
        raise DatasetError(f"{path}: no frames could be decoded")
    return np.stack(frames)


def native_fps(source: Path) -> float | None:
    """The frame rate a video file declares; None for frame folders (they record none) or nonsense values."""
    if source.is_dir():
        return None
    capture = cv2.VideoCapture(str(source))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return fps if 0 < fps < 1000 else None


def _cache_dir() -> Path:
    return Path(os.environ.get("VAD_EDGE_CACHE", Path.home() / ".cache" / "vad-edge")) / "frames"


def _source_signature(source: Path) -> str:
    """Changes when any file of the source changes (name, size, modification time)."""
    files = list_frames(source) if source.is_dir() else [source]
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join([str(source.resolve()), *parts]).encode()).hexdigest()[:24]


def load_frames(source: Path, size: int) -> np.ndarray:
    """Decoded, resized frames of a frame folder or video file, from the cache when it is fresh."""
    cache = _cache_dir() / f"{_source_signature(source)}-{size}.npy"
    if cache.exists():
        try:
            return np.load(cache)
        except (OSError, ValueError):
            cache.unlink(missing_ok=True)  # a torn or corrupt cache file: decode again
    frames = read_frame_folder(source, size) if source.is_dir() else read_video_file(source, size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, frames)
    os.replace(tmp, cache)
    return frames


def load_at_rate(source: Path, size: int, fps: float) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(frames sampled to `fps`, the source index of each or None when every frame is kept, the number of
    frames in the source: what its labels count)."""
    frames = load_frames(source, size)
    try:
        keep = sample_indices(len(frames), native_fps(source), fps)
    except ValueError as exc:
        raise DatasetError(f"{source}: {exc}") from None
    if len(keep) == len(frames):
        return frames, None, len(frames)
    return frames[keep], keep, len(frames)


def _split_sources(split_dir: Path) -> list[Path]:
    """The videos of a split: frame folders under frames/, else video files (in videos/ or the split itself)."""
    frames_dir = split_dir / "frames"
    if frames_dir.is_dir():
        return sorted(p for p in frames_dir.iterdir() if p.is_dir())
    for folder in (split_dir / "videos", split_dir):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            if files:
                return files
    return []


def load_labels(root: Path, names: list[str], lengths: list[int]) -> list[np.ndarray] | None:
    """Frame labels from <root>/labels.json ({video: [0, 1, ...]}) or an ano_pred .mat (gt{i} = [start; end])."""
    json_path = root / "labels.json"
    if json_path.exists():
        try:
            table = json.loads(json_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{json_path}: not valid JSON ({exc})") from exc
        labels = []
        for name, length in zip(names, lengths):
            if name not in table:
                raise DatasetError(f"{json_path}: no labels for video {name!r}")
            if len(table[name]) != length:
                raise DatasetError(f"{json_path}: video {name!r} has {length} frames but {len(table[name])} labels")
            labels.append(np.asarray(table[name], dtype=np.int8))
        return labels
    mats = sorted(root.glob("*.mat"))
    if mats:
        return _labels_from_mat(mats[0], names, lengths)
    return None


def _labels_from_mat(path: Path, names: list[str], lengths: list[int]) -> list[np.ndarray]:
    from scipy.io import loadmat

    try:
        gt = loadmat(path, squeeze_me=False)["gt"].ravel()
    except (KeyError, ValueError, OSError) as exc:
        raise DatasetError(f"{path}: expected an ano_pred label file with a 'gt' cell array ({exc})") from exc
    if len(gt) != len(names):
        raise DatasetError(f"{path}: {len(gt)} label entries for {len(names)} test videos")
    labels = []
    for intervals, length in zip(gt, lengths):
        label = np.zeros(length, dtype=np.int8)
        intervals = np.asarray(intervals).reshape(2, -1)
        for start, end in intervals.T:  # 1-based, inclusive
            label[int(start) - 1 : int(end)] = 1
        labels.append(label)
    return labels


def load_split(root: str | Path, split: str, size: int, fps: float, progress: bool = True) -> list[Video]:
    """All videos of <root>/<split> at size x size and `fps` frames per second (video files are sampled to
    it, frame folders are taken as recorded at it), with labels and pixel masks when the dataset has them."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: no such folder (expected <root>/{split}/frames/<video>/ or video files)")
    sources = _split_sources(split_dir)
    if not sources:
        raise DatasetError(f"{split_dir}: no videos (frame folders under frames/ or video files)")
    videos, lengths = [], []
    for source in tqdm(sources, desc=f"loading {split}", unit="video", disable=not progress):
        name = source.stem if source.is_file() else source.name
        masks = split_dir / "pixel_masks" / name
        frames, indices, length = load_at_rate(source, size, fps)
        videos.append(Video(name, frames, mask_dir=masks if masks.is_dir() else None, source=source,
                            indices=indices))
        lengths.append(length)
    if split != "training":
        labels = load_labels(root, [v.name for v in videos], lengths)
        for video, label in zip(videos, labels or []):
            video.labels = label if video.indices is None else label[video.indices]
    return videos


def load_videos(path: str | Path, size: int, fps: float, progress: bool = True) -> list[Video]:
    """Footage that is not a labelled dataset: a video file, a folder of frames, or a folder holding video
    files or frame folders (in name order, which is taken as time order), sampled to `fps`."""
    path = Path(path)
    if path.is_file():
        sources = [path]
    elif path.is_dir() and list_frames(path):
        sources = [path]
    elif path.is_dir():
        sources = _split_sources(path) or sorted(p for p in path.iterdir() if p.is_dir() and list_frames(p))
    else:
        raise DatasetError(f"{path}: no such file or folder")
    if not sources:
        raise DatasetError(f"{path}: no video files or frame folders")
    videos = []
    for source in tqdm(sources, desc="loading footage", unit="video", disable=not progress):
        frames, indices, _ = load_at_rate(source, size, fps)
        videos.append(Video(source.stem if source.is_file() else source.name, frames, source=source, indices=indices))
    return videos


def dataset_fingerprint(videos: list[Video]) -> str:
    """A short hash of the decoded frames: which footage a model was trained on."""
    digest = hashlib.sha256()
    for video in videos:
        digest.update(video.name.encode())
        digest.update(video.frames.tobytes())
    return digest.hexdigest()[:16]
