"""One prepared run that turns a borrowed GPU machine (no network, minutes of time) into evidence.

    make gpu-session OUT=gpu-out            # on the GPU machine: ~9 minutes, at most 8 files in OUT
    python benchmarks/gpu_session.py --tiny --out /tmp/s   # the same steps on a CPU, in seconds (CI runs it)

Steps, each bounded by what is left of --minutes: the wheels in .whl installed for the session (the
dependencies that machine's Python lacks; `make gpu-wheels` downloads them here); build with CUDA required
(sm_90 only, for speed); every runtime dependency checked by import; the kernel tests on CUDA (half types
included); compute-sanitizer memcheck and racecheck over every kernel; the kernel benchmark (with % of copy
bandwidth); scoring throughput (paper and lite x float32/float16/bfloat16 x batch 1/32/128, kernels against
the reference); the Scorer per precision (float32/float16/bfloat16 x batch 1/8/32); the Scorer's weights
cast to float16 once against autocast's cast on every call (batch 1/8/32); then train the `paper`
profile on Ped2 (bf16) in the time left, evaluate it in `auto` (float16) and in float32, and keep the
checkpoint in float16. Ped2 must travel inside the checkout, as video files in data/ped2-video
(git ignores data/).

OUT receives: summary.json and summary.md (every step's result), session.log (every step's output),
paper.safetensors (the trained model), scores.png and roc.png (its evaluation).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Distributions whose module is named otherwise (requirements name distributions, Python imports modules).
MODULE_OF = {"opencv-python-headless": "cv2", "paho-mqtt": "paho", "scikit-learn": "sklearn", "pyyaml": "yaml",
             "prometheus-client": "prometheus_client"}


class Session:
    def __init__(self, out: Path, minutes: float, tiny: bool):
        self.out, self.tiny = out, tiny
        self.deadline = time.monotonic() + 60 * minutes
        self.work = out / ".work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "session.log", "w")
        self.summary: dict = {"mode": "tiny (CPU)" if tiny else "gpu", "steps": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, step: str, cmd: list[str], limit: float, env: dict | None = None) -> dict:
        """Runs one step's command with a time limit; its output goes to session.log."""
        limit = max(5.0, min(limit, self.left()))
        self.log.write(f"\n===== {step}: {' '.join(cmd)} (limit {limit:.0f} s)\n")
        self.log.flush()
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=limit, env={**os.environ, **(env or {})})
            output, rc = done.stdout, done.returncode
        except subprocess.TimeoutExpired as exc:
            output, rc = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or ""), "timeout"
        self.log.write(output)
        self.log.flush()
        result = {"rc": rc, "seconds": round(time.monotonic() - started, 1)}
        self.summary["steps"][step] = result
        print(f"{step}: rc {rc} in {result['seconds']} s", flush=True)
        return {**result, "output": output}

    def write(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2))
        (self.out / "summary.md").write_text(markdown(self.summary))


def markdown(summary: dict) -> str:
    lines = [f"# GPU session ({summary['mode']})", "", "| step | rc | seconds | result |", "|---|---|---:|---|"]
    for step, r in summary["steps"].items():
        lines.append(f"| {step} | {r['rc']} | {r['seconds']} | {r.get('result', '')} |")
    if summary.get("kernels"):
        lines += ["", "## Kernels", "", summary["kernels"]]
    if summary.get("scoring"):
        lines += ["", "## Scoring throughput", "", "| profile | dtype | batch | kernels clips/s | reference clips/s | ms per batch |",
                  "|---|---|---:|---:|---:|---:|"]
        for row in summary["scoring"]:
            lines.append(f"| {row['profile']} | {row['dtype']} | {row['batch']} | {row['kernels_clips_per_s']:.0f} | "
                         f"{row['reference_clips_per_s']:.0f} | {row['ms_per_batch']:.2f} |")
    if summary.get("precision"):
        lines += ["", "## The Scorer per precision (clips/s)", "", summary["precision"].strip()]
    if summary.get("cast"):
        lines += ["", "## The Scorer's weights cast once, against on every call", "", summary["cast"].strip()]
    if summary.get("eval"):
        e = summary["eval"]
        lines += ["", "## Trained model on Ped2", "", f"micro {e['auc_micro']:.1f}, macro {e['auc_macro']:.1f}, "
                  f"raw {e['auc_raw']:.1f}, pixel {e['auc_pixel']} in {e['precision']}; lag-1 frame difference "
                  f"micro {e['framediff_micro']:.1f}, raw {e['framediff_raw']:.1f}; trained {e['minutes']} min"]
    if summary.get("eval_float32"):
        e = summary["eval_float32"]
        lines += ["", f"The same model in float32: micro {e['auc_micro']:.1f}, macro {e['auc_macro']:.1f}, "
                      f"raw {e['auc_raw']:.1f}, {e['clips_per_second']:.0f} clips/s"]
    return "\n".join(lines) + "\n"


def missing_dependencies(find=importlib.util.find_spec, requirements: list[str] | None = None) -> list[str]:
    """The installed vad-edge's runtime dependencies (not its extras) that this Python cannot import: what
    must travel as wheels to a machine with no network (make gpu-wheels)."""
    requirements = importlib.metadata.requires("vad-edge") if requirements is None else requirements
    names = [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in requirements if "extra ==" not in r]
    return [name for name in names if find(MODULE_OF.get(name, name.replace("-", "_"))) is None]


def tail(text: str, lines: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    for candidate in (found, "/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda/compute-sanitizer/compute-sanitizer"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def exercise_kernels(device: str) -> None:
    """Every kernel once per dtype on small odd shapes: what the sanitizer watches."""
    import torch

    from vad_edge import ops

    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if device == "cuda" else [])
    g = torch.Generator().manual_seed(0)
    for dtype in dtypes:
        frames = torch.randint(0, 256, (2, 5, 9, 13, 3), generator=g, dtype=torch.uint8).to(device)
        ops.prepare_clip(frames[:, :, ::2])
        p = torch.randn(2, 37, 12, 18, generator=g).to(device, dtype)
        ops.variance_attention(p, p * 2, 3)
        z = torch.randn(2, 70, 5, 7, generator=g).to(device, dtype)
        ops.cluster_distance(z, torch.randn(33, 70, generator=g).to(device))
        images = [torch.randn(2, 3, 12, 20, generator=g).to(device, dtype) for _ in range(4)]
        ops.anomaly_score(*images, torch.rand(2, 1, 3, 4, generator=g).to(device, dtype), (0.5, 2.0, 1.0, 1.5))
    if device == "cuda":
        torch.cuda.synchronize()
    print("exercised every kernel")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=9.0, help="the whole session, every step included")
    parser.add_argument("--data", default=str(ROOT / "data" / "ped2-video"), help="Ped2 (videos) for training")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run of every step (CI)")
    parser.add_argument("--exercise-kernels", metavar="DEVICE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.exercise_kernels:
        exercise_kernels(args.exercise_kernels)
        return 0

    out = Path(args.out)
    s = Session(out, args.minutes, args.tiny)
    device = "cpu" if args.tiny else "cuda"
    # 0. The dependencies that machine's Python lacks travel as wheels in .whl (make gpu-wheels); installed
    # into the session's own folder, on PYTHONPATH for every step. Whatever is still missing is named after
    # the build (which installs vad-edge's metadata), before a step fails on it.
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if wheels and not args.tiny:
        site = s.work / "site"
        s.run("wheels", [PYTHON, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                         "--target", str(site), *map(str, wheels)], limit=120)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        sys.path.insert(0, str(site))
    # 1. Build (GPU mode): CUDA required, sm_90 only; no network, so no build isolation.
    if not args.tiny:
        r = s.run("build", [PYTHON, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", "-e", "."],
                  limit=240, env={"VAD_EDGE_CUDA": "ON", "VAD_EDGE_CUDA_ARCHS": "90"})
        if r["rc"] != 0:
            s.summary["steps"]["build"]["result"] = tail(r["output"])
            s.write()
            return 1
    importlib.invalidate_caches()  # what the wheels and the build installed since this process started
    missing = missing_dependencies()
    s.summary["steps"]["dependencies"] = {"rc": 1 if missing else 0, "seconds": 0, "result":
                                          f"missing: {', '.join(missing)} (make gpu-wheels, carry .whl)"
                                          if missing else "all importable"}
    r = s.run("backend", [PYTHON, "-c", "import json, vad_edge; print(json.dumps(vad_edge.ops.backend()))"], limit=60)
    s.summary["backend"] = json.loads(r["output"].strip().splitlines()[-1]) if r["rc"] == 0 else None

    # 2. Kernel tests on the CUDA kernels (a GPU; in tiny mode their CPU emulation), half types included.
    selection = "cuda and not emulated" if not args.tiny else "cuda-emulated and (non_contiguous or half)"
    r = s.run("kernel tests", [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ops.py", "-k", selection],
              limit=180)
    s.summary["steps"]["kernel tests"]["result"] = tail(r["output"], 1)

    # 3. compute-sanitizer memcheck and racecheck over every kernel.
    tool = sanitizer()
    for check in ("memcheck", "racecheck"):
        step = f"sanitizer {check}"
        if args.tiny or tool is None:
            s.summary["steps"][step] = {"rc": "skipped", "seconds": 0,
                                        "result": "no GPU (tiny mode)" if args.tiny else "compute-sanitizer not found"}
            continue
        r = s.run(step, [tool, "--tool", check, "--error-exitcode", "3", PYTHON, __file__, "--out", str(out),
                         "--exercise-kernels", device], limit=120)
        s.summary["steps"][step]["result"] = tail(r["output"], 2)

    # 4. Kernel benchmark, with % of copy bandwidth on a GPU.
    r = s.run("kernel benchmark", [PYTHON, "benchmarks/ops.py", "--device", device, "--reps", "2" if args.tiny else "10"],
              limit=120)
    s.summary["kernels"] = r["output"][r["output"].find("###"):] if "###" in r["output"] else None

    # 5. Scoring throughput: profile x dtype x batch, kernels against the reference.
    rows = s.work / "scoring.json"
    scoring = (["--profiles", "tiny", "--dtypes", "float32", "--batches", "1,4", "--seconds", "0.2"] if args.tiny
               else ["--profiles", "paper,lite", "--dtypes", "float32,float16,bfloat16", "--batches", "1,32,128",
                     "--seconds", "1.5"])
    r = s.run("scoring throughput", [PYTHON, "benchmarks/model.py", "--scoring", "--device", device, *scoring,
                                     "--json", str(rows)], limit=150)
    s.summary["scoring"] = json.loads(rows.read_text()) if rows.exists() else None

    # 5b. The precision the box would score in: the Scorer (uint8 windows to fused scores) per precision x batch.
    precisions = ["--precisions", "float32,bfloat16", "--batches", "1,4", "--threads", "1", "--seconds", "0.2"] \
        if args.tiny else ["--precisions", "float32,float16,bfloat16", "--batches", "1,8,32", "--threads", "1",
                           "--seconds", "1.5"]
    r = s.run("precision throughput", [PYTHON, "benchmarks/precision.py", "--device", device, *precisions], limit=120)
    s.summary["precision"] = r["output"][r["output"].find("| precision"):] if "| precision" in r["output"] else None

    # 5c. The Scorer's weights cast once against autocast's cast on every call: on the H100 of 2026-12-05
    # autocast ran `lite` at batch 1 at 0.72x float32, a model cast whole at 1.33x.
    cast = ["--cast", "bfloat16", "--batches", "1", "--seconds", "0.05"] if args.tiny \
        else ["--cast", "float16", "--batches", "1,8,32", "--threads", "1", "--seconds", "1"]
    r = s.run("weights cast once", [PYTHON, "benchmarks/precision.py", "--device", device, *cast], limit=90)
    s.summary["cast"] = r["output"][r["output"].find("| batch"):] if "| batch" in r["output"] else None

    # 6. Train paper on Ped2 in the time left (bf16), keep float16, evaluate.
    data = Path(args.data)
    if args.tiny:
        from vad_edge.data.synthetic import write_dataset

        data = write_dataset(s.work / "synthetic", size=48, train_videos=2, test_videos=2, frames=24)
    elif not (data / "training").is_dir():
        s.summary["steps"]["train paper"] = {"rc": "skipped", "seconds": 0, "result": f"no dataset at {data}"}
        s.write()
        return 1
    model = s.work / "model.safetensors"
    train_minutes = 0.05 if args.tiny else max(0.5, (s.left() - 100) / 60)  # evaluation and saving after it
    profile = ["--profile", "tiny", "--pretrain-iters", "3", "--iters", "3", "--kmeans-batches", "2",
               "--kmeans-points", "200"] if args.tiny else ["--profile", "paper", "--batch", "16"]
    r = s.run("train paper", [PYTHON, "-m", "vad_edge.cli", "train", "--data", str(data), "--out", str(model), *profile,
                              "--max-minutes", f"{train_minutes:.2f}", "--precision", "bfloat16" if not args.tiny else "float32",
                              "--device", device], limit=60 * train_minutes + 90)
    s.summary["steps"]["train paper"]["result"] = tail(r["output"], 1)
    if model.exists():
        keep = out / "paper.safetensors"
        s.run("float16 checkpoint", [PYTHON, "-c", "import sys, torch; from vad_edge.model import checkpoint; "
                                     "m, meta = checkpoint.load(sys.argv[1]); checkpoint.save(m, sys.argv[2], meta, "
                                     "dtype=torch.float16)", str(model), str(keep)], limit=60)
        report_dir = s.work / "eval"
        r = s.run("evaluate", [PYTHON, "-m", "vad_edge.cli", "eval", "--data", str(data), "--checkpoint", str(keep),
                               "--out", str(report_dir), "--baseline", "framediff", "--device", device], limit=120)
        if (report_dir / "report.json").exists():
            report = json.loads((report_dir / "report.json").read_text())
            meta = json.loads(subprocess.run([PYTHON, "-c", "import sys, json; from vad_edge.model import checkpoint; "
                                              "print(json.dumps(checkpoint.read_metadata(sys.argv[1])['training']))",
                                              str(keep)], capture_output=True, text=True, cwd=ROOT).stdout)
            s.summary["eval"] = {k: report[k] for k in ("auc_micro", "auc_macro", "auc_raw", "auc_pixel")}
            s.summary["eval"].update(framediff_micro=report["baseline_framediff"]["auc_micro"],
                                     framediff_raw=report["baseline_framediff"]["auc_raw"],
                                     minutes=meta["minutes"], clips_per_second=report["clips_per_second"],
                                     checkpoint_mib=round(keep.stat().st_size / 2**20, 1))
            for plot in report["plots"]:
                shutil.copy(report_dir / plot, out / plot)
            s.summary["eval"]["precision"] = report["precision"]  # auto: float16 on the GPU
            # The same model in float32: what the faster precision costs in AUC, measured in one session.
            r = s.run("evaluate float32", [PYTHON, "-m", "vad_edge.cli", "eval", "--data", str(data), "--checkpoint",
                                           str(keep), "--out", str(s.work / "eval32"), "--device", device,
                                           "--precision", "float32"], limit=120)
            if (s.work / "eval32" / "report.json").exists():
                report = json.loads((s.work / "eval32" / "report.json").read_text())
                s.summary["eval_float32"] = {k: report[k] for k in ("auc_micro", "auc_macro", "auc_raw",
                                                                    "clips_per_second")}
    shutil.rmtree(s.work)
    s.summary["seconds"] = round(60 * args.minutes - s.left(), 1)
    s.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
