import pytest
import torch

import vad_edge
from vad_edge.ops import _emulation

CUDA_KERNELS = vad_edge.ops.backend()["cuda"] and torch.cuda.is_available()

# Every kernel test runs on the CPU kernels, on the CUDA kernels run on the CPU (csrc/emulation: every
# development build has them), and on the GPU when this machine has one and the build has CUDA.
DEVICES = [
    "cpu",
    pytest.param("cuda-emulated", marks=pytest.mark.skipif(
        not _emulation.available(), reason="built without VAD_EDGE_CUDA_EMULATION=ON (make setup turns it on)")),
    pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_KERNELS, reason="no CUDA GPU or CPU-only build")),
]


def _tensors_on(name: str):
    """The device of a test's tensors. "cuda-emulated": CPU tensors, with every op on its CUDA path."""
    if name == "cuda-emulated":
        with _emulation.cuda_on_cpu():
            yield torch.device("cpu")
    else:
        yield torch.device(name)


@pytest.fixture(params=DEVICES)
def device(request):
    yield from _tensors_on(request.param)


@pytest.fixture(params=DEVICES[1:])
def cuda_device(request):
    """Where the CUDA kernels run: emulated on the CPU, and a GPU when there is one."""
    yield from _tensors_on(request.param)


@pytest.fixture(autouse=True)
def runtime_directory(tmp_path_factory, monkeypatch):
    """Each test's own runtime directory, where an agent keeps what a stop could not store (spill.py): no
    test writes into /run, and none finds another's."""
    directory = tmp_path_factory.mktemp("run")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(directory))
    return directory


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto on a free loopback port, stopped after the test (mqtt_helpers.Broker)."""
    from mqtt_helpers import Broker

    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def gen():
    """A fresh, seeded generator: inputs are random but a failure can be replayed."""
    return torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny STD model trained for seconds on synthetic normal footage: enough to tell the injected
    anomaly (a big, bright, fast block) from the slow small walkers."""
    import os

    from vad_edge.data.synthetic import write_dataset
    from vad_edge.train import train
    from vad_edge.train_config import TrainConfig

    root = tmp_path_factory.mktemp("synthetic-train")
    old = os.environ.get("VAD_EDGE_CACHE")
    os.environ["VAD_EDGE_CACHE"] = str(root / "cache")
    try:
        data = write_dataset(root / "data", size=64, train_videos=3, test_videos=1, frames=60)
        # float32: the tests' expectations of this 150-step model were set without bf16 autocast
        config = TrainConfig(profile="tiny", batch=8, pretrain_iters=100, iters=50, kmeans_batches=5,
                             kmeans_points=2000, lr=1e-3, cluster_lr=1e-4, precision="float32")
        return train(data, root / "tiny.safetensors", config, progress=False)
    finally:
        if old is None:
            os.environ.pop("VAD_EDGE_CACHE")
        else:
            os.environ["VAD_EDGE_CACHE"] = old
