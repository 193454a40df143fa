"""vad-edge: video anomaly detection on the edge (STD), publishing events over MQTT."""

__version__ = "0.1.0"

__all__ = ["ops", "build_info", "__version__"]


def build_info() -> dict:
    """What this build of the kernels can run, read from the extension alone: no torch import, so commands
    that only report it start in a fraction of a second."""
    import platform
    from importlib import metadata

    from vad_edge import _C

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "version": __version__,
        "torch": torch_version,
        "cpu": True,
        "cpu_arch": platform.machine(),
        "cpu_simd": str(_C.CPU_SIMD),  # the vector instructions the C++ kernels were compiled for
        "openmp": bool(_C.WITH_OPENMP),
        "openmp_max_threads": int(_C.OPENMP_MAX_THREADS),
        "cuda": bool(_C.WITH_CUDA),
        "cuda_version": _C.CUDA_VERSION,
        "cuda_archs": list(_C.CUDA_ARCHS),
    }


def __getattr__(name: str):
    # vad_edge.ops imports torch (seconds): only on first use.
    if name == "ops":
        import importlib

        return importlib.import_module("vad_edge.ops")
    raise AttributeError(f"module 'vad_edge' has no attribute {name!r}")
