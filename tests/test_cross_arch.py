"""The shipped model's scores on this machine against the ones x86-64 gave, on the same clips.

tests/data/cross_arch_scores.json holds windows of the bundled sample (each named by its first frame, with
the sha256 of its decoded, resized frames) and the lite model's raw scores of them, computed on x86-64 in
float32 and in bfloat16. `make test` recomputes them on x86, `make test-aarch64` on aarch64 (a Jetson's
CPU, under emulation): same clips, same model, the kernels and torch of that architecture.

After a deliberate change to the model, the kernels or the sample, rewrite the file on x86-64 with
`python tests/test_cross_arch.py` and say why in the commit.
"""

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vad_edge.data.videos import read_video_file
from vad_edge.model import checkpoint
from vad_edge.model.scoring import Scorer

SAMPLE = Path(checkpoint.__file__).resolve().parent.parent / "assets" / "sample.mp4"
EXPECTED = Path(__file__).resolve().parent / "data" / "cross_arch_scores.json"
# First frames of the windows: the sample's 180 frames from start to end, pedestrians, then the cyclist.
STARTS = [0, 35, 70, 105, 140, 175]
# How far a score may move between architectures, relative to it. The two builds of torch sum in different
# orders (oneDNN's x86 kernels against ARM's), and so do the two compilations of the C++ kernels.
# float32: a few thousand float32 roundings (2^-24 each) through the networks stay far below 1e-4.
# bfloat16: each op's output is rounded to 8 significant bits (2^-9 relative); the networks' dozens of
# roundings add up to about a per cent, so 2^-5 leaves room without hiding a broken kernel (those are off
# by orders of magnitude, or by more than the score's spread between these clips).
RTOL = {"float32": 1e-4, "bfloat16": 2.0**-5}


def windows() -> tuple[torch.Tensor, list[str]]:
    """uint8 [len(STARTS),5,S,S,3] BGR windows of the sample at the model's size, and each one's sha256."""
    size = checkpoint.load(checkpoint.shipped("lite"))[0].profile.size
    frames = read_video_file(SAMPLE, size)
    clips = np.stack([frames[start:start + 5] for start in STARTS])
    return torch.from_numpy(clips), [hashlib.sha256(clip.tobytes()).hexdigest() for clip in clips]


def scores(clips: torch.Tensor, precision: str) -> list[float]:
    model, _ = checkpoint.load(checkpoint.shipped("lite"))
    return Scorer(model, precision).score(clips).raw.double().tolist()


@pytest.fixture(scope="module")
def expected():
    return json.loads(EXPECTED.read_text())


@pytest.fixture(scope="module")
def clips(expected):
    clips, digests = windows()
    assert expected["starts"] == STARTS
    # Different pixels would make any score comparison meaningless: say it is the decoder, not the model.
    assert digests == expected["sha256"], "OpenCV decoded or resized the sample differently from x86-64"
    return clips


@pytest.mark.parametrize("precision", list(RTOL))
def test_scores_match_x86(expected, clips, precision):
    want = np.array(expected["scores"][precision])
    got = np.array(scores(clips, precision))
    np.testing.assert_allclose(got, want, rtol=RTOL[precision], atol=0,
                               err_msg=f"{platform.machine()} scores of the sample in {precision} against x86-64's")


def test_the_clips_tell_the_scores_apart(expected):
    """The comparison means something only if the clips' scores differ by more than the tolerance."""
    for precision, rtol in RTOL.items():
        values = sorted(expected["scores"][precision])
        assert values[-1] > values[0] * (1 + 4 * rtol), precision


if __name__ == "__main__":
    if platform.machine() != "x86_64":
        sys.exit("the expected scores are x86-64's: write them there")
    clips, digests = windows()
    EXPECTED.parent.mkdir(exist_ok=True)
    EXPECTED.write_text(json.dumps({
        "written_on": f"{platform.machine()}, torch {torch.__version__}",
        "starts": STARTS, "sha256": digests,
        "scores": {precision: scores(clips, precision) for precision in RTOL},
    }, indent=1) + "\n")
    print(f"written: {EXPECTED}")
