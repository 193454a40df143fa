"""The research scripts run end to end on a small synthetic scene, so their tables never rot."""

import subprocess
import sys

import pytest
from pathlib import Path

from vad_edge.data.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_ablation_prints_every_row_per_scene(tmp_path, tiny_checkpoint):
    data = write_dataset(tmp_path / "scene", size=48, train_videos=2, test_videos=2, frames=24)
    done = subprocess.run([sys.executable, "benchmarks/ablation.py", "--scene", f"{data}={tiny_checkpoint}",
                           "--plot", str(tmp_path / "terms.png")],
                          cwd=ROOT, capture_output=True, text=True, env={"VAD_EDGE_CACHE": str(tmp_path / "cache"),
                                                                         "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith(f"| {data} ")]
    names = [r[2].strip() for r in rows]
    for name in ("motion", "standardised without appearance", "per place, most anomalous cell",
                 "per place, top 1/16 of cells", "per row (perspective), motion + cluster",
                 "standardised without appearance, top 1/16 of cells",
                 "relative motion: motion ÷ (F4 − F0 energy + its normal mean)",
                 "frame difference, lag 1 (no learning)", "optical-flow speed, lag 4 (no learning)",
                 "standardised without appearance + lag-4 optical-flow speed ÷ its normal mean",
                 "standardised without appearance + object speed against perspective ÷ its normal mean",
                 "standardised without appearance + object speed per band of rows only ÷ its normal mean",
                 "standardised without appearance + object speed, things found at twice the input side",
                 "standardised without appearance + object speed + place rarity, each ÷ its normal mean",
                 "motion, cluster map and object speed, each ÷ its normal standard deviation",
                 "motion, cluster map and object speed, each's tail evidence on normal clips, summed",
                 "motion, cluster map and object speed, each's tail evidence on normal clips, the largest",
                 "standardised without appearance + object speed against perspective ÷ its normal mean, causal mean "
                 "of 5 clips",
                 "motion places: speed per cell, its 4 most surprised cells (alone)",
                 "standardised without appearance + object speed against perspective ÷ its normal mean + motion "
                 "places ÷ its held-out tail",
                 "standardised without appearance + object speed against perspective ÷ its normal mean + motion "
                 "places with directions ÷ its held-out tail"):
        assert name in names
    aucs = [float(r[3]) for r in rows if len(r) == 6]
    assert aucs and all(0 <= a <= 100 for a in aucs)
    # The second table: each test video (both have normal and anomalous frames), the anomalous share, the
    # shipped score, the score before motion places and their four terms.
    per_video = [[float(v) for v in r[3:]] for r in rows if len(r) == 10]
    assert len(per_video) == 2 and all(len(r) == 7 and all(0 <= v <= 100 for v in r) for r in per_video)
    assert max(v for r in per_video for v in r[1:]) > 1  # in per cent, as the first table
    # The injected block is large and fast: the frame difference separates it almost perfectly; the flow
    # speed well, though less (the flow inside a uniform block is the aperture problem's guess).
    assert float(rows[names.index("frame difference, lag 1 (no learning)")][3]) > 90
    assert float(rows[names.index("optical-flow speed, lag 4 (no learning)")][3]) > 75
    assert (tmp_path / "terms.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_site_compares_budgets(tmp_path, tiny_checkpoint):
    data = write_dataset(tmp_path / "scene", size=48, train_videos=2, test_videos=2, frames=120)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "benchmarks/calibration_site.py", "--data", str(data), "--base",
                           str(tiny_checkpoint), "--budget", "0.02", "--budget", "0.04", "--threads", "1",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={"VAD_EDGE_CACHE": str(tmp_path / "cache"),
                                                                         "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith(("| 0.02 | 1 |", "| 0.04 | 1 |"))]
    assert [r[0].strip() for r in rows] == ["0.02", "0.04"]
    for r in rows:
        pretrain, finetune = (int(n) for n in r[3].split("+"))
        assert pretrain >= 0 and finetune >= 0 and 0 <= float(r[4]) <= 100
    for budget in ("0.02", "0.04"):
        assert (out / f"budget-{budget}" / "scene.safetensors").exists()
    assert (out / "scene_budgets.png").read_bytes()[:4] == b"\x89PNG"


def test_clip_ring_prints_a_row_per_stream_from_a_real_camera():
    from rtsp_helpers import server_missing

    if missing := server_missing():
        pytest.skip(missing)
    done = subprocess.run([sys.executable, "benchmarks/clip_ring.py", "--seconds", "3", "--streams", "h264:360x240:10",
                           "h265:480x320:10"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| h26")]
    assert [r[0].strip() for r in rows] == ["h264 360x240 10 fps", "h265 480x320 10 fps"]
    for row in rows:  # a ring holds some of its stream, and a clip has bytes
        assert float(row[3]) > 0 and float(row[4]) > 0


def test_tamper_prints_each_kinds_delay_and_the_false_rate():
    done = subprocess.run([sys.executable, "benchmarks/tamper.py", "--minutes", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr
    kinds = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| covered")
             or line.startswith("| moved") or line.startswith("| defocused") or line.startswith("| frozen")]
    assert len(kinds) == 7 and all(row[0].strip().split()[0] == row[1].strip() for row in kinds)  # told as itself
    assert all(float(row[2]) <= 10.0 for row in kinds)
    normal = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(normal) == 1 and normal[0][1].strip() == "600"
