"""Test hook: the CUDA kernels, compiled for the host (csrc/emulation), run on CPU tensors.

Inside `cuda_on_cpu()` every op takes its CUDA path for CPU tensors, through vad_edge._cuda_emulated: the
same launchers and kernels, with blocks, barriers and warp shuffles emulated by threads. Argument checks
follow the CUDA rules there (float16 and bfloat16 accepted). Development builds have the module
(`make setup`); installed wheels do not.
"""

import contextlib

module = None  # vad_edge._cuda_emulated while cuda_on_cpu() is active


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vad_edge._cuda_emulated") is not None


def active() -> bool:
    return module is not None


@contextlib.contextmanager
def cuda_on_cpu():
    global module
    from vad_edge import _cuda_emulated

    module = _cuda_emulated
    try:
        yield
    finally:
        module = None
