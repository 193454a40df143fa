import pytest
import torch

import vad_edge

CUDA_KERNELS = vad_edge.ops.backend()["cuda"] and torch.cuda.is_available()

# Every kernel test runs on the CPU, and on the GPU when this machine has one and the build has CUDA.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_KERNELS, reason="no CUDA GPU or CPU-only build"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def gen():
    """A fresh, seeded generator: inputs are random but a failure can be replayed."""
    return torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
