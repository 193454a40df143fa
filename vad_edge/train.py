"""`vad-edge train` (a model from normal footage) and `vad-edge fuse` (a checkpoint's score refitted)."""

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch

import vad_edge
from vad_edge.data import dataset_fingerprint, load_split
from vad_edge.model import checkpoint, fusion
from vad_edge.model.network import resized
from vad_edge.runtime import hardware
from vad_edge.runtime.batch import fit_fusion
from vad_edge.runtime.bundle import fit_entry, fit_metadata, main_fit
from vad_edge.runtime.scorer import Scorer
from vad_edge.train_config import TrainConfig
from vad_edge.trainer import Trainer, fresh_model

log = logging.getLogger(__name__)


def train(data: str | Path, out: str | Path, config: TrainConfig, resume: str | Path | None = None,
          progress: bool = True, init: str | Path | None = None) -> Path:
    """Trains on <data>/training and writes the checkpoint `out` (float32 weights). `init`: a checkpoint
    to start from (its weights and centres) instead of a fresh model, to train a model further (at another
    input side too, with config.size)."""
    out = Path(out)
    if init:
        model, init_meta = checkpoint.load(init)
        if model.profile.name != config.profile:
            raise checkpoint.CheckpointError(f"{init}: profile {model.profile.name!r}, asked to train {config.profile!r}")
        if checkpoint.frame_rate(init_meta) != config.fps:
            raise checkpoint.CheckpointError(f"{init}: trained at {checkpoint.frame_rate(init_meta):g} fps, "
                                             f"asked to train at {config.fps:g}")
        if config.size:
            model.profile = resized(model.profile, config.size)
    else:
        model = fresh_model(config)  # built here because the videos are loaded at its side
    videos = load_split(data, "training", model.profile.size, config.fps, progress=progress)
    trainer = Trainer(config, videos, out, model=model)
    if resume:
        trainer.load_state(Path(resume))
    scorer = Scorer(trainer.model)  # the precision this machine scores in: the score is fitted in it
    reserve = kmeans = 0.0
    if config.max_minutes is not None:
        reserve, kmeans = trainer.plan_budget(scorer, videos)
        log.info("budget %.1f min: training %.1f min (the K-means refit's %.1f included), then scoring the %d "
                 "training clips to fit the score (about %.1f min)", config.max_minutes,
                 max(0.0, config.max_minutes - reserve / 60), kmeans / 60,
                 sum(len(v.frames) - 4 for v in videos), reserve / 60)
    trainer.run(progress, reserve_s=reserve, kmeans_s=kmeans)

    # One pass over the training clips fits the fusion (the terms' normal means) and gives the scores whose
    # statistics set the default threshold.
    train_scores = np.concatenate(fit_fusion(scorer, videos, config.fusion, progress=progress,
                                             desc="training scores"))
    metadata = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vad_edge_version": vad_edge.__version__,
        "torch_version": torch.__version__,
        "training": {
            "data": Path(data).name,
            "fingerprint": dataset_fingerprint(videos),
            "videos": len(videos),
            "clips": sum(len(v.frames) - 4 for v in videos),
            "config": dataclasses.asdict(config),
            "device": str(trainer.device),
            "minutes": round(trainer.elapsed / 60, 2),
            "iterations": trainer.iterations(),
            "init": {"path": str(init), "sha256": checkpoint.file_sha256(init)} if init else None,
        },
        "frame_rate": config.fps,
        **fit_metadata(train_scores, scorer),
        "metrics": {},
    }
    return checkpoint.save(trainer.model, out, metadata)


def fuse(checkpoint_path: str | Path, data: str | Path, fusion_name: str, out: str | Path,
         precisions: tuple[str, ...] = ("auto",)) -> Path:
    """Refits how a checkpoint's terms become one score (its fusion) on the normal footage of
    <data>/training, once in each of `precisions`, and writes the checkpoint `out` with the same weights. Each
    fit is kept in `fits` under its precision, beside the checkpoint's fits in other precisions when the fusion
    is the same one; the main fit (the top-level keys, what an older vad-edge reads) is the float32 one when
    there is one."""
    model, meta = checkpoint.load(checkpoint_path)
    videos = load_split(data, "training", model.profile.size, checkpoint.frame_rate(meta))
    fits = {}
    if fusion_name == model.fusion.name:  # the other precisions' fits still hold
        fits = {hardware.fitted(meta): main_fit(meta), **(meta.get("fits") or {})}
    for requested in precisions:
        scorer = Scorer(model, requested)
        scores = np.concatenate(fit_fusion(scorer, videos, fusion_name, desc=f"fitting in {scorer.precision.name}"))
        fits[scorer.precision.name] = fit_entry(scores, model.fusion)
    main = "float32" if "float32" in fits else next(iter(fits))
    if fits[main]["fusion"] != meta["fusion"]:
        meta.get("metrics", {}).pop("ped2", None)  # measured with the old score
    model.fusion = fusion.from_metadata(fits[main]["fusion"])
    meta.update(score_stats=fits[main]["score_stats"], precision=main, fits=fits)
    return checkpoint.save(model, out, meta, dtype=checkpoint.stored_dtype(checkpoint_path))
