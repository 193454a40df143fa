"""Datasets: frame folders, video files, labels, caching, bad input."""

import json

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from vad_edge.data import ClipDataset, clip_windows, load_split
from vad_edge.data.synthetic import make_frames, write_dataset, write_frame_folder, write_video
from vad_edge.data.videos import DatasetError, dataset_fingerprint


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAD_EDGE_CACHE", str(tmp_path / "cache"))


def test_frame_folders_with_labels(tmp_path):
    root = write_dataset(tmp_path / "ds", size=48, train_videos=2, test_videos=2, frames=20)
    train = load_split(root, "training", 32, 10.0, progress=False)
    test = load_split(root, "testing", 32, 10.0, progress=False)
    assert [v.name for v in train] == ["01", "02"]
    assert train[0].frames.shape == (20, 32, 32, 3) and train[0].frames.dtype == np.uint8
    assert train[0].labels is None
    assert test[0].labels.sum() > 0 and len(test[0].labels) == 20


def test_grayscale_frames_become_three_channels_and_sort_numerically(tmp_path):
    folder = tmp_path / "ds" / "training" / "frames" / "a"
    folder.mkdir(parents=True)
    for i in (10, 2, 1):  # 1, 2, 10: numeric order, not lexicographic
        cv2.imwrite(str(folder / f"{i}.png"), np.full((24, 24), i * 20, dtype=np.uint8))
    (video,) = load_split(tmp_path / "ds", "training", 16, 10.0, progress=False)
    assert video.frames.shape == (3, 16, 16, 3)
    assert video.frames[:, 0, 0, 0].tolist() == [20, 40, 200]


def test_video_files_and_mat_labels(tmp_path):
    root = tmp_path / "ds"
    frames, labels = make_frames(30, 48, anomaly=(10, 19))
    write_video(root / "testing" / "videos" / "cam1.mp4", frames)
    gt = np.empty((1,), dtype=object)
    gt[0] = np.array([[11], [20]])  # 1-based, inclusive: frames 10..19
    savemat(root / "gt.mat", {"gt": gt})
    (video,) = load_split(root, "testing", 32, 10.0, progress=False)
    assert video.name == "cam1" and len(video.frames) == 30
    assert video.labels.tolist() == labels.tolist()


def test_cache_is_reused_and_refreshed(tmp_path):
    root = write_dataset(tmp_path / "ds", size=32, train_videos=1, test_videos=1, frames=10)
    first = load_split(root, "training", 16, 10.0, progress=False)
    cached = list((tmp_path / "cache" / "frames").glob("*.npy"))
    assert len(cached) == 1
    again = load_split(root, "training", 16, 10.0, progress=False)
    assert dataset_fingerprint(first) == dataset_fingerprint(again)
    write_frame_folder(root / "training" / "frames" / "01", make_frames(12, 32, seed=5)[0])  # footage changed
    changed = load_split(root, "training", 16, 10.0, progress=False)
    assert len(changed[0].frames) == 12


def test_clip_windows():
    root_videos = [type("V", (), {"frames": np.zeros((7, 4, 4, 3), np.uint8)})(),
                   type("V", (), {"frames": np.zeros((5, 4, 4, 3), np.uint8)})()]
    assert clip_windows(root_videos) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert ClipDataset(root_videos)[3].shape == (5, 4, 4, 3)


def test_bad_datasets_are_named(tmp_path):
    with pytest.raises(DatasetError, match="training: no such folder"):
        load_split(tmp_path, "training", 16, 10.0, progress=False)
    (tmp_path / "training" / "frames" / "01").mkdir(parents=True)
    with pytest.raises(DatasetError, match="01: no image files"):
        load_split(tmp_path, "training", 16, 10.0, progress=False)
    (tmp_path / "training" / "frames" / "01" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="0.jpg: not a readable image"):
        load_split(tmp_path, "training", 16, 10.0, progress=False)
    broken = tmp_path / "v" / "testing" / "videos" / "x.mp4"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match="x.mp4: OpenCV cannot open this video|x.mp4: no frames"):
        load_split(tmp_path / "v", "testing", 16, 10.0, progress=False)


def test_label_mismatch_is_named(tmp_path):
    root = write_dataset(tmp_path / "ds", size=32, train_videos=1, test_videos=1, frames=10)
    (root / "labels.json").write_text(json.dumps({"01": [0] * 9}))
    with pytest.raises(DatasetError, match="video '01' has 10 frames but 9 labels"):
        load_split(root, "testing", 16, 10.0, progress=False)
