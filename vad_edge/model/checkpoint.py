"""Checkpoints: one safetensors file, weights plus JSON metadata in its header. No pickle anywhere.

The metadata (key "vad_edge") holds the profile, what the model was trained on, the score statistics of
its training data (the agent's default threshold) and evaluation metrics.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vad_edge.model import fusion
from vad_edge.model.network import STD, Profile, build

FORMAT = "vad-edge.checkpoint/1"
# Checkpoints written before `frame_rate` was recorded were all trained on Ped2, filmed at 10 fps.
DEFAULT_FRAME_RATE = 10.0


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def save(model: STD, path: str | Path, metadata: dict, dtype: torch.dtype = torch.float32) -> Path:
    """Writes atomically (temporary file, then rename). Floating-point weights are stored as `dtype`."""
    path = Path(path)
    meta = {**metadata, "format": FORMAT, "profile": dataclasses.asdict(model.profile),
            "fusion": model.fusion.to_metadata()}
    tensors = {
        name: (t.detach().to(dtype) if t.is_floating_point() else t.detach()).cpu().contiguous()
        for name, t in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"vad_edge": json.dumps(meta)})
    tmp.chmod(0o644)  # read by the service user and by other tools, not only by whoever trained it
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if "vad_edge" not in header:
        raise CheckpointError(f"{path}: safetensors file without vad-edge metadata (not a vad-edge checkpoint)")
    try:
        meta = json.loads(header["vad_edge"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt metadata ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, this vad-edge reads {FORMAT!r}")
    return meta


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[STD, dict]:
    """(model in eval mode, float32, on device; metadata). Rejects corrupt or mismatched files clearly."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        model = build(Profile(**meta["profile"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad profile in metadata ({exc})") from exc
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt weights ({exc})") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match profile {meta['profile'].get('name')!r}: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, "
                f"profile {meta['profile'].get('name')!r} needs {tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    try:
        model.fusion = fusion.from_metadata(meta.get("fusion"))
    except fusion.FusionError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return model.to(device).eval(), meta


def stored_dtype(path: str | Path) -> torch.dtype:
    """The floating-point type a checkpoint stores its weights in (shipped ones are float16)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("centers").dtype


def frame_rate(meta: dict) -> float:
    """Frames per second of the footage the model was trained on: a clip is 5 frames at this spacing."""
    value = meta.get("frame_rate", DEFAULT_FRAME_RATE)
    if not isinstance(value, (int, float)) or not 0 < value < 1000:
        raise CheckpointError(f"frame_rate {value!r} in the metadata is not a frame rate")
    return float(value)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped(profile: str = "lite") -> Path:
    """Path of a checkpoint shipped in the package."""
    return Path(__file__).resolve().parent.parent / "checkpoints" / f"{profile}.safetensors"
