"""Camera footage for the tamper detector's tests and benchmarks/tamper.py: the bundled sample at 10 fps, the
attacks on a camera made from it (covered, moved, defocused, frozen), and the normal things that must not look
like one (a camera's auto-exposure, a person standing close to the lens)."""

from collections.abc import Callable, Iterator

import cv2
import numpy as np

from vad_edge.data.sample import SAMPLE

FPS = 10.0


def sample_frames() -> list[np.ndarray]:
    """The sample's decoded frames, BGR uint8, in order."""
    capture = cv2.VideoCapture(str(SAMPLE))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert frames, f"could not decode {SAMPLE}"
    return frames


def covered(frame: np.ndarray, level: int, opacity: float = 0.97) -> np.ndarray:
    """A hand or tape over the lens (level 0), a torch shone into it (255), spray or frosting (a light gray, a
    lower opacity): `1 - opacity` of the scene shows through."""
    return cv2.addWeighted(frame, 1.0 - opacity, np.full_like(frame, level), opacity, 0.0)


def shifted(frame: np.ndarray, fraction: float = 0.15) -> np.ndarray:
    """The camera turned sideways by `fraction` of the picture's width; what comes into view is the scene mirrored."""
    matrix = np.float32([[1, 0, fraction * frame.shape[1]], [0, 1, 0]])
    return cv2.warpAffine(frame, matrix, (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REFLECT_101)


def rotated(frame: np.ndarray, degrees: float = 12.0) -> np.ndarray:
    """The camera rolled by `degrees` about its axis."""
    height, width = frame.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(frame, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101)


def blurred(frame: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """The lens knocked out of focus (or smeared)."""
    return cv2.GaussianBlur(frame, (0, 0), sigma)


def lit(frame: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """A global change of brightness and contrast, as a camera's auto-exposure makes."""
    return cv2.convertScaleAbs(frame, alpha=gain, beta=offset)


def person_texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Dark, textured clothes seen from too close to be in focus: blotches and folds, gray levels about 30..110."""
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 3.0)
    folds = np.sin(np.arange(width, dtype=np.float32) / 5.0)[None, :]
    texture = 70.0 + 25.0 * noise / (noise.std() + 1e-6) + 12.0 * folds
    return np.repeat(np.clip(texture, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def close_person(frame: np.ndarray, texture: np.ndarray, x: int, y: int) -> np.ndarray:
    """`texture` (person_texture) pasted with its top-left corner at (x, y), clipped to the frame."""
    out = frame.copy()
    height, width = texture.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, frame.shape[1]), min(y + height, frame.shape[0])
    out[y0:y1, x0:x1] = texture[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


# The tampers, each as the reason the detector must give and what it does to a frame. Frozen is not a frame
# filter: its footage repeats one decoded frame (tampered_footage).
TAMPERS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray] | None]] = {
    "covered (dark)": ("covered", lambda f: covered(f, 0)),
    "covered (bright)": ("covered", lambda f: covered(f, 255)),
    "covered (frosted)": ("covered", lambda f: covered(f, 200, 0.85)),
    "moved (shifted 15 %)": ("moved", shifted),
    "moved (rotated 12°)": ("moved", rotated),
    "defocused (blur sigma 5)": ("defocused", blurred),
    "frozen (one frame repeated)": ("frozen", None),
}


def tampered_footage(frames: list[np.ndarray], tamper: str, before: float, during: float, after: float,
                     first: int = 0) -> Iterator[tuple[float, np.ndarray]]:
    """(time, frame) at FPS from t = 0: the looping sample from frame `first` for `before` seconds, tampered
    (TAMPERS[tamper]) for `during` seconds, then normal again for `after` seconds."""
    change = TAMPERS[tamper][1]
    count = round((before + during + after) * FPS)
    frozen = None
    for i in range(count):
        t = i / FPS
        frame = frames[(first + i) % len(frames)]
        if before <= t < before + during:
            if change is None:
                frozen = frame if frozen is None else frozen
                frame = frozen
            else:
                frame = change(frame)
        yield t, frame


def normal_footage(frames: list[np.ndarray], seconds: float, seed: int = 0, person_every: float = 150.0,
                   person_seconds: float = 4.0) -> Iterator[tuple[float, np.ndarray, dict]]:
    """(time, frame, scene) at FPS from t = 0: the looping sample under a camera's auto-exposure (a slow
    drift of the gain, and a sudden jump to a new gain in 0.6..1.4 and offset in -25..25 about once a
    minute), with a person standing close to the lens (a dark textured blob over 25..35 % of the picture,
    swaying) for `person_seconds` about every `person_every` seconds, the first after 20 s. The scene says
    what was done to the frame: {"gain", "offset", "person": the fraction of the picture the person hides}."""
    rng = np.random.default_rng(seed)
    height, width = frames[0].shape[:2]
    gain, offset = 1.0, 0.0
    next_jump = rng.exponential(60.0)
    next_person, person = 20.0, None
    for i in range(round(seconds * FPS)):
        t = i / FPS
        if t >= next_jump:
            gain, offset = rng.uniform(0.6, 1.4), rng.uniform(-25.0, 25.0)
            next_jump = t + rng.exponential(60.0)
        drift = 0.15 * np.sin(2 * np.pi * t / 300.0)  # the sun behind clouds, over minutes
        scene = {"gain": float(np.clip(gain + drift, 0.6, 1.4)), "offset": offset, "person": 0.0}
        frame = lit(frames[i % len(frames)], scene["gain"], offset)
        if person is None and t >= next_person:
            area = rng.uniform(0.25, 0.35) * width * height
            aspect = rng.uniform(0.6, 1.0)  # taller than wide
            w = int(np.sqrt(area * aspect))
            h = min(int(area / w), height)
            person = (t, person_texture(w, h, rng), int(rng.integers(0, width - w + 1)), height - h)
        if person is not None:
            since, texture, x, y = person
            sway = round(6 * np.sin(2 * np.pi * (t - since) / 1.5))
            frame = close_person(frame, texture, x + sway, y)
            visible = texture.shape[0] * (min(x + sway + texture.shape[1], width) - max(x + sway, 0))
            scene["person"] = visible / (width * height)
            if t - since >= person_seconds:
                person, next_person = None, t + rng.exponential(person_every)
        yield t, frame, scene
