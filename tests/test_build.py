"""What the build chooses by itself: the CUDA architectures for each nvcc version."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
@pytest.mark.parametrize("nvcc,archs", [
    ("13.0", "75-real;80-real;86-real;87-real;89-real;90"),
    ("12.6", "72-real;75-real;80-real;86-real;87-real;89-real;90"),
    ("11.8", "72-real;75-real;80-real;86-real;87-real;89-real;90"),
    ("11.4", "72-real;75-real;80-real;86-real;87"),  # JetPack 5: no sm_89/sm_90 before CUDA 11.8
    ("11.0", "72-real;75-real;80-real;86"),
])
def test_default_cuda_architectures_follow_the_toolkit(tmp_path, nvcc, archs):
    script = tmp_path / "print.cmake"
    script.write_text(f'include("{ROOT}/csrc/cmake/cuda_archs.cmake")\n'
                      f'vad_edge_default_cuda_archs("{nvcc}" out)\nmessage(STATUS "archs=${{out}}")\n')
    done = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True, check=True)
    assert f"archs={archs}" in done.stdout + done.stderr
