"""The Trainer: STD's training stages on normal footage, resumable, within a time budget (`vad-edge train`
and `vad-edge calibrate` run it).

1. pre-training: autoencoder steps only;
2. K-means++ on sampled per-pixel latents, L2-normalised first (a documented fix: the authors fit the
   centres on unnormalised latents but measure distances on normalised ones, docs/model.md);
3. fine-tuning: each iteration an autoencoder step, then a cluster step on the same batch that moves only
   the centres and the two encoder heads.

Defaults differ from the authors' (batch 4, Adam 1e-5 / 1e-6, 5k + 100k iterations) to fit a CPU budget:
batch 8 and learning rates 50x higher (5e-4 / 5e-5) over a few thousand iterations (docs/model.md).
"""

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from sklearn.cluster import KMeans
from tqdm import tqdm

from vad_edge import ops
from vad_edge.data import ClipDataset, Video
from vad_edge.model import checkpoint
from vad_edge.model.losses import autoencoder_loss, cluster_loss
from vad_edge.model.network import PROFILES, STD, Outputs, build
from vad_edge.runtime import hardware
from vad_edge.runtime.batch import scoring_seconds, seconds_per_clip
from vad_edge.runtime.runners import autocast
from vad_edge.runtime.scorer import Scorer
from vad_edge.train_config import TrainConfig

log = logging.getLogger(__name__)

STAGES = ("pretrain", "kmeans", "finetune", "done")


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
        self.device = hardware.pick_device(config.device)
        self.precision = hardware.for_training(config.precision, self.device.type)
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
        # Weights, optimiser state and losses stay float32 (hardware.for_training).
        return autocast(self.precision, self.device)

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
