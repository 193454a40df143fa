"""The shipped model's scores on this machine against the ones x86-64 gave, on the same clips.

tests/data/cross_arch.npz holds two stretches of the bundled sample at the lite model's size, 7 frames
each (pedestrians only; the cyclist), so six 5-frame windows, and the model's raw scores of those windows
computed on x86-64: the networks' part in float32 and in bfloat16, and the motion terms (object speed and
motion places, from OpenCV's optical flow: model/object_speed.py, model/motion_places.py) apart. `make test` recomputes them on x86, `make test-aarch64` on
aarch64 (a Jetson's CPU, under emulation): the same pixels and model, each architecture's kernels and torch.
The frames are stored, not decoded again: OpenCV's aarch64 build decodes and resizes the sample to slightly
different pixels than its x86-64 build.

After a deliberate change to the model or the kernels, rewrite the file on x86-64 with
`python tests/test_cross_arch.py` and say why in the commit.
"""

import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vad_edge.model import checkpoint
from vad_edge.runtime.scorer import Scorer, motion_term

EXPECTED = Path(__file__).resolve().parent / "data" / "cross_arch.npz"
# The stretches' first frames in the sample (180 frames: pedestrians, then from about frame 100 a cyclist).
STARTS = [30, 140]
# How far a score may move between architectures, relative to it. The two builds of torch sum in different
# orders (oneDNN's x86 kernels against ARM's), and so do the two compilations of the C++ kernels.
# float32: a few thousand float32 roundings (2^-24 each) through the networks stay far below 1e-4.
# bfloat16: each op's output is rounded to 8 significant bits (2^-9 relative); the networks' dozens of
# roundings add up to about a per cent, so 2^-5 leaves room without hiding a broken kernel (those are off
# by orders of magnitude, or by more than the score's spread between these clips).
# motion: OpenCV's optical flow, built with NEON on aarch64 and SSE/AVX on x86, may round differently, and a
# pixel whose flow sits at the 1-pixel "moving" bar or a speed bin's edge may then fall on the other side,
# moving a thing's 90th percentile speed or a cell's counts a little; a broken flow, region pass or histogram
# is off by tens of per cent.
RTOL = {"float32": 1e-4, "bfloat16": 2.0**-5, "motion": 1e-2}
# The windows each part is compared on. Under qemu the networks cost about 2 minutes a window in float32 and
# 35 s in bfloat16 (measured 2026-12-06, torch 2.10's aarch64 build), so they take one window of each
# stretch, the pedestrians' and the cyclist's: all six float32 windows were 12 of CI's 32 minutes. The
# motion terms cost under a second for all six.
WINDOWS = {"float32": slice(None, None, 3), "bfloat16": slice(None, None, 3), "motion": slice(None)}


def windows(frames: np.ndarray) -> torch.Tensor:
    """uint8 [S,7,H,W,3] stretches -> the [S*3,5,H,W,3] windows in them."""
    return torch.from_numpy(np.stack([stretch[i:i + 5] for stretch in frames for i in range(3)]))


def scores(clips: torch.Tensor, part: str) -> np.ndarray:
    """The shipped model's raw scores of these windows: the networks' part in precision `part`, or the
    motion terms ("motion")."""
    model, _ = checkpoint.load(checkpoint.shipped("lite"))
    if part == "motion":
        return motion_term(clips, model.fusion)
    model.fusion = replace(model.fusion, speed=None, places=None)
    return Scorer(model, part).shipped_score(clips).raw.double().numpy()


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(EXPECTED))


@pytest.mark.parametrize("part", list(RTOL))
def test_scores_match_x86(expected, part):
    got = scores(windows(expected["frames"])[WINDOWS[part]], part)
    np.testing.assert_allclose(got, expected[part][WINDOWS[part]], rtol=RTOL[part], atol=0,
                               err_msg=f"{platform.machine()} scores ({part}) against x86-64's")


def test_the_clips_tell_the_scores_apart(expected):
    """The comparison means something only if the clips' scores differ by more than the tolerance."""
    for part, rtol in RTOL.items():
        compared = expected[part][WINDOWS[part]]
        assert compared.max() > compared.min() * (1 + 4 * rtol), part


if __name__ == "__main__":
    from vad_edge.data.videos import read_video_file
    from vad_edge.demo import SAMPLE

    if platform.machine() != "x86_64":
        sys.exit("the expected scores are x86-64's: write them there")
    sample = read_video_file(SAMPLE, checkpoint.load(checkpoint.shipped("lite"))[0].profile.size)
    frames = np.stack([sample[start:start + 7] for start in STARTS])
    EXPECTED.parent.mkdir(exist_ok=True)
    results = {part: scores(windows(frames), part) for part in RTOL}
    np.savez_compressed(EXPECTED, frames=frames, **results)
    print(f"written: {EXPECTED} (torch {torch.__version__})", results)
