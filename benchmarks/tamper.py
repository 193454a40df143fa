"""Camera tamper detection (vad_edge/model/tamper.py) on the bundled sample made into footage by the test
suite's tests/tamper_footage.py: how soon each tamper is told, how often normal footage raises one, and what
a frame costs.

    python benchmarks/tamper.py [--minutes 60] [--seed 0] [--after 3] [--size WxH]

The reference is learned on the sample's first half, as the tests do. Each tamper (tamper_footage.TAMPERS):
the sample looping at 10 fps from its second half, normal for 10 s, tampered for 20 s, normal again for 15 s;
its delay runs from the tamper's first frame to the start event (the hold, `--after`, included), its end
from the first normal frame again to the end event; any other event is counted as wrong. Normal footage:
`--minutes` of the looping sample under auto-exposure changes (a slow drift, a sudden jump about once a
minute) with a person at the lens (a dark, textured blob over 25..35 % of the picture, 4 s, about every
150 s): every tamper event there is a false one. Cost per frame: time.perf_counter around each update of the
normal run, with OpenCV's threads as it sets them (printed). `--size` scales
every frame once made (e.g. to 1920x1080), to time the detector on a camera's full picture: the footage is
the same, tampers included.
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's tamper footage
from tamper_footage import FPS, TAMPERS, normal_footage, sample_frames, tampered_footage  # noqa: E402

from vad_edge.model.tamper import TamperDetector, TamperReference  # noqa: E402

BEFORE, DURING, BACK = 10.0, 20.0, 15.0


def scaler(size: str | None):
    """The frame as the camera would give it at `size` (WxH), or as it is."""
    if not size:
        return lambda frame: frame
    width, height = (int(v) for v in size.split("x"))
    return lambda frame: cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)


def tamper_row(frames: list[np.ndarray], reference: TamperReference, tamper: str, after: float, scale) -> str:
    reason = TAMPERS[tamper][0]
    detector = TamperDetector(reference, after=after)
    footage = tampered_footage(frames, tamper, BEFORE, DURING, BACK, first=len(frames) // 2)
    changes = [(t, change) for t, frame in footage for change in detector.update(scale(frame), t)]
    starts = [(t, c["detail"]) for t, c in changes if (c["state"], c["reason"]) == ("start", reason)]
    ends = [t for t, c in changes if (c["state"], c["reason"]) == ("end", reason)]
    wrong = ", ".join(f"{c['state']} {c['reason']} at {t:.1f} s" for t, c in changes if c["reason"] != reason)
    delay = f"{starts[0][0] - BEFORE:.1f}" if starts else "-"
    end = f"{ends[0] - BEFORE - DURING:.1f}" if ends else "-"
    detail = starts[0][1] if starts else ""
    return f"| {tamper} | {reason if starts else 'not told'} | {delay} | {end} | {wrong or 'none'} | {detail} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="of normal footage")
    parser.add_argument("--seed", type=int, default=0, help="of the normal footage's exposure changes and people")
    parser.add_argument("--after", type=float, default=3.0, help="the detector's hold, seconds")
    parser.add_argument("--size", help="WxH every frame is scaled to (default: the sample's 360x240)")
    args = parser.parse_args()

    frames, scale = sample_frames(), scaler(args.size)
    reference = TamperReference.learn(scale(frame) for frame in frames[:len(frames) // 2])
    height, width = scale(frames[0]).shape[:2]

    print(f"Tampers ({width}x{height}, {FPS:g} fps, hold {args.after:g} s; tampered from {BEFORE:g} s to "
          f"{BEFORE + DURING:g} s):\n")
    print("| tamper | told as | delay to start (s) | delay to end (s) | other events | detail at start |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    for tamper in TAMPERS:
        print(tamper_row(frames, reference, tamper, args.after, scale), flush=True)

    detector = TamperDetector(reference, after=args.after)
    costs, events, gains, stands, seconds = [], [], [], 0, 0.0
    in_person = False
    for t, frame, scene in normal_footage(frames, args.minutes * 60.0, seed=args.seed):
        frame = scale(frame)
        start = time.perf_counter()
        changes = detector.update(frame, t)
        costs.append(time.perf_counter() - start)
        events += [(t, change) for change in changes]
        stands += scene["person"] > 0 and not in_person
        in_person, seconds = scene["person"] > 0, t
        gains.append(scene["gain"])
    jumps = int(np.sum(np.abs(np.diff(gains)) > 0.2))
    hours = (seconds + 1 / FPS) / 3600.0
    starts = sum(change["state"] == "start" for _, change in events)
    costs_ms = 1000.0 * np.array(costs)
    print(f"\nNormal footage ({width}x{height}, seed {args.seed}; OpenCV threads: {cv2.getNumThreads()}):\n")
    print("| minutes | frames | people at the lens | exposure jumps | gain range | false tamper events "
          "(starts) | per hour | ms per frame: mean | p50 | p99 |")
    print("| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.minutes:g} | {len(costs)} | {stands} | {jumps} | {min(gains):.2f}..{max(gains):.2f} | {starts} "
          f"| {starts / hours:.2f} | {costs_ms.mean():.3f} | {np.percentile(costs_ms, 50):.3f} "
          f"| {np.percentile(costs_ms, 99):.3f} |")
    for t, change in events:
        print(f"  at {t:.1f} s: {change['state']} {change['reason']}: {change['detail']}")


if __name__ == "__main__":
    main()
