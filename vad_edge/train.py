"""`vad-edge train`: STD's training stages on normal footage.

1. pre-training: autoencoder steps only;
2. K-means++ on sampled per-pixel latents, L2-normalised first (a documented fix: the authors fit the
   centres on unnormalised latents but measure distances on normalised ones, std_spec.md 8.6);
3. fine-tuning: each iteration an autoencoder step, then a cluster step on the same batch that moves only
   the centres and the two encoder heads.

Defaults differ from the authors' (batch 4, Adam 1e-5 / 1e-6, 5k + 100k iterations) to fit a CPU budget:
batch 8 and learning rates 50x higher (5e-4 / 5e-5) over a few thousand iterations. See the README.
"""

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from tqdm import tqdm

import vad_edge
from vad_edge import ops
from vad_edge.data import ClipDataset, Video, dataset_fingerprint, load_split
from vad_edge.model import checkpoint
from vad_edge.model.losses import autoencoder_loss, cluster_loss
from vad_edge.model.network import PROFILES, STD, Outputs, build, resized
from vad_edge.model.scoring import Scorer, fit_fusion, score_statistics, scoring_seconds, seconds_per_clip
from vad_edge.train_config import TrainConfig

log = logging.getLogger(__name__)

STAGES = ("pretrain", "kmeans", "finetune", "done")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision: expected auto, bf16 or fp32, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def fresh_model(config: TrainConfig) -> STD:
    """A new model of the config's profile and side, its weights drawn from the config's seed."""
    torch.manual_seed(config.seed)
    return build(config.profile, config.size or None)


class Trainer:
    """Holds the model, optimisers and progress; `state_path` lets an interrupted run resume. `clock` (seconds)
    measures the time budget: tests drive it by steps instead of the machine's speed."""

    def __init__(self, config: TrainConfig, videos: list[Video], out: Path, model: STD | None = None,
                 clock=time.monotonic):
        self.config = config
        self.clock = clock
        self.videos = videos
        self.out = out
        self.state_path = out.with_name(out.name + ".state.pt")
        self.device = pick_device(config.device)
        self.bf16 = use_bf16(config.precision, self.device)
        torch.manual_seed(config.seed)
        # A given model is trained further (calibration, `--init`, another `--size`); otherwise a fresh one.
        self.model: STD = (model if model is not None else fresh_model(config)).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        if not config.learn_motion:
            self.model.freeze_motion()
        self.ae_opt = torch.optim.Adam(self.model.autoencoder_parameters(), lr=config.lr)
        self.cluster_opt = torch.optim.Adam(self.model.cluster_parameters(), lr=config.cluster_lr)
        self.stage, self.iteration, self.elapsed = "pretrain", 0, 0.0
        self.pretrained = 0  # pretraining iterations, once that stage is over (reports say how much was trained)
        generator = torch.Generator().manual_seed(config.seed)
        self.loader = torch.utils.data.DataLoader(ClipDataset(videos), batch_size=config.batch, shuffle=True,
                                                  drop_last=True, generator=generator)
        self.batches = self._forever()

    def _forever(self):
        while True:
            yield from self.loader

    def _next_clip(self) -> torch.Tensor:
        frames = next(self.batches).to(self.device, non_blocking=True)
        clip, _ = ops.prepare_clip(frames)
        return clip.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else clip

    def _autocast(self):
        # bfloat16 needs no loss scaling; on this project's AVX-512 BF16 CPU it trains lite 1.6x faster than
        # float32 (benchmarks/README.md). Weights, optimiser state and losses stay float32.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # --- the three stages -------------------------------------------------------------------------------

    def autoencoder_step(self, clip: torch.Tensor) -> dict[str, float]:
        self.model.train()
        with self._autocast():
            out = self.model(clip)
        # The losses in float32: squared errors of small residuals lose too much in bfloat16.
        loss, parts = autoencoder_loss(clip, Outputs(out.fif_hat.float(), out.d_hat.float(), out.z))
        self.ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.ae_opt.step()
        return parts

    def cluster_step(self, clip: torch.Tensor) -> float:
        with self._autocast():
            loss = cluster_loss(self.model.latents(clip).float(), self.model.centers, self.model.profile.alpha)
        self.cluster_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.cluster_opt.step()
        return loss.item()

    @torch.no_grad()
    def init_centers(self, progress: bool) -> None:
        """K-means++ on L2-normalised per-pixel latents (train-mode BN, as the authors)."""
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        per_batch = max(1, cfg.kmeans_points // cfg.kmeans_batches)
        samples = []
        self.model.train()
        for _ in tqdm(range(cfg.kmeans_batches), desc="k-means latents", unit="batch", disable=not progress):
            with self._autocast():
                z = self.model(self._next_clip()).z.float()
            points = torch.nn.functional.normalize(z, dim=1).permute(0, 2, 3, 1).reshape(-1, z.shape[1]).cpu()
            pick = torch.randperm(len(points), generator=generator)[:per_batch]
            samples.append(points[pick])
        points = torch.cat(samples).numpy()
        kmeans = KMeans(n_clusters=self.model.profile.clusters, init="k-means++", n_init=3, random_state=cfg.seed)
        kmeans.fit(points)
        self.model.centers.copy_(torch.from_numpy(kmeans.cluster_centers_).to(self.model.centers))

    # --- resumable state --------------------------------------------------------------------------------

    def save_state(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "ae_opt": self.ae_opt.state_dict(),
            "cluster_opt": self.cluster_opt.state_dict(),
            "stage": self.stage,
            "iteration": self.iteration,
            "pretrained": self.pretrained,
            "elapsed": self.elapsed,
            "config": json.dumps(dataclasses.asdict(self.config)),
            "rng": torch.get_rng_state(),
        }
        tmp = self.state_path.with_name(self.state_path.name + f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def load_state(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)  # no pickle of code
        except Exception as exc:  # torch raises several types for truncated or foreign files
            raise checkpoint.CheckpointError(f"{path}: not a readable training state ({exc})") from exc
        saved = json.loads(state["config"])
        # Sides are compared as resolved: size 0 (and states written before --size) means the profile's own.
        profile = PROFILES.get(saved["profile"])
        saved_side = saved.get("size", 0) or (profile.size if profile else 0)
        if (saved["profile"], saved_side) != (self.config.profile, self.model.profile.size):
            raise checkpoint.CheckpointError(
                f"{path}: training state of profile {saved['profile']!r} at {saved_side} px, "
                f"asked to train {self.config.profile!r} at {self.model.profile.size} px"
            )
        saved_learns_motion = saved.get("learn_motion", True)  # states written before the choice learned it
        if saved_learns_motion != self.config.learn_motion:  # the optimisers hold other parameters
            raise checkpoint.CheckpointError(
                f"{path}: this training state {'learned' if saved_learns_motion else 'froze'} the motion U-Net "
                f"and this run would not; rerun as it started or delete {path} to start afresh"
            )
        self.model.load_state_dict(state["model"])
        self.ae_opt.load_state_dict(state["ae_opt"])
        self.cluster_opt.load_state_dict(state["cluster_opt"])
        self.stage, self.iteration, self.elapsed = state["stage"], int(state["iteration"]), float(state["elapsed"])
        self.pretrained = int(state.get("pretrained", 0))  # states written before it was kept
        torch.set_rng_state(state["rng"].cpu())

    def iterations(self) -> dict[str, int]:
        """Optimiser steps taken so far in each stage."""
        if self.stage == "pretrain":
            return {"pretrain": self.iteration, "finetune": 0}
        return {"pretrain": self.pretrained, "finetune": self.iteration}

    # --- the run ----------------------------------------------------------------------------------------

    def plan_budget(self, scorer: Scorer, scored: list[Video]) -> tuple[float, float]:
        """Seconds of a time budget that are not optimiser steps, priced by timed batches of `scored` (their
        median, seconds_per_clip): the scoring of `scored` after training (run's reserve_s), and the K-means
        refit between the stages (run's kmeans_s): its forward passes, doubled for the clustering itself
        (K-means++ on 20,000 latents took 2.3 s beside 5 s of forward passes on a 2-core x86), with a 10 %
        margin."""
        per_clip = seconds_per_clip(scorer, scored, clock=self.clock)
        return scoring_seconds(per_clip, scored), 2 * 1.1 * self.config.kmeans_batches * self.config.batch * per_clip

    def run(self, progress: bool = True, reserve_s: float = 0.0, kmeans_s: float = 0.0) -> None:
        """Trains to the iteration ceilings or the time budget, whichever ends first. reserve_s: seconds of
        the budget kept for what comes after training (the scoring pass), so the command keeps to it;
        kmeans_s: what the K-means refit between the stages will take, kept the same way (plan_budget)."""
        cfg = self.config
        budget = math.inf if cfg.max_minutes is None else max(0.0, cfg.max_minutes * 60 - reserve_s)
        if self.stage in ("pretrain", "kmeans") and kmeans_s > budget:
            log.warning("a budget of %.1f min is less than the K-means refit and the scoring after training "
                        "need (about %.1f min): no training steps, and the run takes that long",
                        cfg.max_minutes, (kmeans_s + reserve_s) / 60)
        start = self.clock() - self.elapsed
        total = cfg.pretrain_iters + cfg.iters
        done = self.iteration + (cfg.pretrain_iters if self.stage in ("finetune", "done") else 0)
        timed = math.isfinite(budget)
        if timed:
            # Under a time budget the clock, not the iteration ceiling, usually ends the run: the bar counts
            # seconds of the budget (its ETA is then honest) and shows iterations beside them.
            bar = tqdm(total=round(budget), initial=round(min(self.elapsed, budget)), desc="training", unit="s",
                       bar_format="{l_bar}{bar}| {n:.0f}/{total} s of budget [{elapsed}<{remaining}{postfix}]",
                       disable=not progress)
        else:
            bar = tqdm(total=total, initial=done, desc="training", unit="it", disable=not progress)

        def advance(**postfix) -> None:
            if timed:
                bar.update(min(self.clock() - start, bar.total) - bar.n)  # the bar's total is rounded
                postfix["it"] = self.iteration  # of the current stage
            else:
                bar.update(1)
            bar.set_postfix(postfix, refresh=False)

        # Under a time budget pre-training gets its share of what the K-means refit leaves, so fine-tuning is
        # never squeezed out, and the refit's time is kept before it starts rather than overrun after.
        pretrain_budget = max(0.0, budget - kmeans_s) * cfg.pretrain_iters / max(1, total)
        while self.stage != "done":
            self.elapsed = self.clock() - start
            out_of_time = self.elapsed > budget
            if self.stage == "pretrain":
                if self.iteration >= cfg.pretrain_iters or self.elapsed > pretrain_budget:
                    self.stage, self.pretrained, self.iteration = "kmeans", self.iteration, 0
                    continue
                parts = self.autoencoder_step(self._next_clip())
            elif self.stage == "kmeans":
                self.init_centers(progress)  # the model is unusable without centres: never skipped
                self.stage = "finetune"
                self.save_state()
                continue
            else:
                if self.iteration >= cfg.iters or out_of_time:
                    self.stage = "done"
                    break
                clip = self._next_clip()
                parts = self.autoencoder_step(clip)
                parts["cluster"] = self.cluster_step(clip)
            self.iteration += 1
            advance(stage=self.stage, **{k: f"{v:.4f}" for k, v in parts.items()})
            if self.iteration % cfg.save_every == 0:
                self.save_state()
        bar.close()
        self.elapsed = self.clock() - start
        self.save_state()


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
        "score_stats": score_statistics(train_scores),
        "precision": scorer.precision.name,
        "metrics": {},
    }
    return checkpoint.save(trainer.model, out, metadata)
