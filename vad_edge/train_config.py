"""What `vad-edge train` can be told, and its defaults: no torch here, so the command line starts fast."""

from dataclasses import dataclass


@dataclass
class TrainConfig:
    profile: str = "lite"
    size: int = 0  # input side in pixels, a multiple of 32; 0: the profile's (lite 128, paper 256)
    # The recipe the shipped lite model was trained with from scratch (README, "The model").
    batch: int = 8
    lr: float = 5e-4
    cluster_lr: float = 5e-5
    pretrain_iters: int = 1800
    iters: int = 2200  # fine-tuning iterations
    kmeans_batches: int = 40
    kmeans_points: int = 40000
    seed: int = 0
    device: str = "auto"
    max_minutes: float | None = None
    save_every: int = 250
    fps: float = 10.0  # frame rate of the clips: video files are sampled to it (Ped2's frames are 10 fps)
    precision: str = "auto"  # auto, float32 or bfloat16 (runtime/hardware.for_training): auto takes bfloat16
    # autocast where the hardware runs it natively (CUDA; CPUs with AMX or AVX-512 BF16)
    fusion: str = "motion-cluster-speed-places"  # how the terms become one score (model/fusion.py)
    # False: the motion U-Net stays as given and only the appearance branch and the centres learn. Calibration
    # does this by default: a motion branch that learns a site's normal motion learns its anomalies' too.
    learn_motion: bool = True
