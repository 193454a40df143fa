"""The snapshot image: a frame with the anomaly map laid over it and the hot region boxed."""

import cv2
import numpy as np


def overlay(frame: np.ndarray, emap: np.ndarray, region: dict | None = None, label: str | None = None) -> np.ndarray:
    """BGR frame + JET-coloured map (normalised to its own maximum) + the region's box."""
    h, w = frame.shape[:2]
    heat = cv2.resize(emap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    peak = float(heat.max())
    heat = np.clip(heat / peak, 0, 1) if peak > 0 else heat
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(frame, 0.6, colored, 0.4, 0)
    if region:
        x, y = int(region["x"] * w), int(region["y"] * h)
        cv2.rectangle(out, (x, y), (x + int(region["w"] * w), y + int(region["h"] * h)), (0, 0, 255), 2)
    if label:
        cv2.putText(out, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
