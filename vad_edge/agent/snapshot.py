"""The snapshot image: a frame with the anomaly map laid over it, the hot region boxed and the camera's zones
drawn (ignore zones greyed, the others outlined with their name and multiplier)."""

from collections.abc import Sequence

import cv2
import numpy as np

from vad_edge.config import Zone

IGNORED, WATCHED = (128, 128, 128), (0, 255, 255)  # BGR: grey, yellow


def overlay(frame: np.ndarray, emap: np.ndarray, region: dict | None = None, label: str | None = None,
            zones: Sequence[Zone] = ()) -> np.ndarray:
    """BGR frame + JET-coloured map (normalised to its own maximum) + the region's box + the zones."""
    h, w = frame.shape[:2]
    heat = cv2.resize(emap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    peak = float(heat.max())
    heat = np.clip(heat / peak, 0, 1) if peak > 0 else heat
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = draw_zones(cv2.addWeighted(frame, 0.6, colored, 0.4, 0), zones)
    if region:
        x, y = int(region["x"] * w), int(region["y"] * h)
        cv2.rectangle(out, (x, y), (x + int(region["w"] * w), y + int(region["h"] * h)), (0, 0, 255), 2)
    if label:
        cv2.putText(out, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_zones(image: np.ndarray, zones: Sequence[Zone]) -> np.ndarray:
    """The image with each zone outlined and named at its centre; ignore zones greyed."""
    h, w = image.shape[:2]
    for zone in zones:
        corners = np.array([[x * w, y * h] for x, y in zone.points], np.int32)
        colour = IGNORED if zone.ignore else WATCHED
        if zone.ignore:
            shaded = image.copy()
            cv2.fillPoly(shaded, [corners], IGNORED)
            image = cv2.addWeighted(image, 0.5, shaded, 0.5, 0)
        cv2.polylines(image, [corners], True, colour, 1, cv2.LINE_AA)
        name = f"{zone.name} (ignored)" if zone.ignore else f"{zone.name} x{zone.threshold_multiplier:g}"
        (tw, _), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cx, cy = corners.mean(axis=0).astype(int)
        cv2.putText(image, name, (int(cx) - tw // 2, int(cy)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return image


def zone_grid(frame: np.ndarray, zones: Sequence[Zone] = (), step: float = 0.1) -> np.ndarray:
    """The frame, enlarged to at least 960 px wide so the labels read, with a coordinate grid every `step`
    (labelled 0..1, x along the top, y down the left) and the zones drawn: what a person reads a polygon's
    points off."""
    scale = max(1, -(-960 // frame.shape[1]))
    out = draw_zones(cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR), zones)
    h, w = out.shape[:2]
    for k in range(1, round(1 / step)):
        v = k * step
        x, y = round(v * w), round(v * h)
        for line in (((x, 0), (x, h - 1)), ((0, y), (w - 1, y))):
            cv2.line(out, *line, (255, 255, 255), 1 if k % 5 else 2, cv2.LINE_AA)
        for text, at in ((f"{v:.1f}", (x + 2, 12)), (f"{v:.1f}", (2, y - 3))):
            cv2.putText(out, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
