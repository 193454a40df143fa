"""Camera tamper detection: is the camera itself being attacked? One detector per camera, fed its frames;
its reference learnt at calibration (save_reference) and read by the agent (load_reference).

    reference = TamperReference.learn(normal_frames)        # or None: the detector learns one itself
    detector = TamperDetector(reference, after=3.0)
    for frame, t in stream:                                 # BGR uint8, any size; t in seconds, any epoch
        for change in detector.update(frame, t):            # {"state": "start"|"end", "reason": ..., "detail": ...}
            ...
    detector.active                                         # the reason in force, or None
    detector.reference.to_arrays()                          # (None until learned) dict[str, np.ndarray]
    TamperReference.from_arrays(arrays)                     # for safetensors; ValueError on bad arrays

The reasons, most specific first (at most one is in force; when several have lasted, the first wins):
- covered: the picture went dark, bright or uniform: its contrast (std of gray) fell under a quarter of the
  reference's. Needs no reference: under 4 gray levels the picture shows nothing at all.
- frozen: the stream repeats one picture: consecutive frames differ by under 0.1 gray level on average.
  Needs no reference. Feed only new frames: a reader that hands the same frame twice makes its own freeze.
- defocused: sharpness (Laplacian energy over gradient energy, which contrast does not change) fell under
  0.3 of the reference's.
- moved: the static scene is no longer where it was: under 45 % of the cells of an 8 x 6 grid that show
  still structure still correlate with the reference's gradients (which brightness and contrast do not
  change). A person in front of the lens hides a part of the scene, a moved camera all of it. A picture of
  another shape than the reference's is scaled to it, and so reads as moved.

A reason starts once its condition has held for `after` seconds and ends once it has been gone for `after`
seconds; the times are the frames' own. Everything is judged on the frame scaled to 160 pixels wide, gray:
well under a millisecond a frame, and the defocus it sees is blur over about 0.6 % of the picture's width.

The reference is the camera's normal picture: the mean gradient field of normal frames, their gradient
energy in each cell, their contrast and their sharpness. Without one the detector learns it from its first
`learn_seconds` of frames that are neither covered nor frozen, judging covered and frozen meanwhile. While
no tamper is in force and a frame shows none of the conditions, the reference follows it slowly (a time
constant of 10 minutes): seasons, dirt and a repainted wall do not end up as tampers, while an attack is
never learned (it shows a condition from its first frame). A camera that drifts away by steps too small to
show for 10 minutes at a stretch is followed, not told.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import safetensors
import safetensors.numpy

log = logging.getLogger("vad_edge.tamper")

WIDTH = 160  # of the picture every measure is taken on
GRID_COLUMNS, GRID_ROWS = 8, 6
REASONS = ("covered", "frozen", "defocused", "moved")  # most specific first: see _conditions

# The thresholds were set on the bundled sample (UCSD Ped2, 360 x 240) made into footage by
# tests/tamper_footage.py; "normal" is ten minutes of it with exposure changes and a person at the lens.
# covered: a camera's auto-exposure (a gain of 0.6..1.4) leaves over 0.6 of the reference's contrast, a
# person at the lens 0.85..0.95; a hand, tape or a torch over the lens leave a few percent, spray or frosting
# 0.1..0.2.
COVERED_CONTRAST = 0.25
UNIFORM = 4.0  # gray levels of std: under it a picture shows nothing, whatever the reference
# frozen: consecutive frames of the sample (people walking, H.264's noise) differ by 0.43 gray level or more
# (0.25 blurred by sigma 6 pixels); a repeated picture decodes to the same pixels, give or take a rounding.
# A tenth of a gray level: all but identical, so that a still scene's last bit of noise is not a freeze.
FROZEN_DIFFERENCE = 0.1
# defocused: normal footage keeps over 0.69 of the reference's sharpness (the least with a person at the
# lens, too close to be in focus, over a third of the picture), a blur of sigma 3 pixels at 360 wide leaves
# 0.17, of 1.5 pixels 0.45: 0.3 catches blur from sigma 2 pixels (0.6 % of the width) up.
DEFOCUSED_SHARPNESS = 0.3
# moved: in normal footage nine in ten of the cells judged (TEXTURED, STILL) correlate with the
# reference's gradients at over 0.8, three in four at 0.99 or more; with the camera turned by 15 % of the
# width half of them are under 0.2 and three in four under 0.45.
CELL_MATCH = 0.5
# Normal footage keeps at least 64 % of the cells judged matched, a person at the lens over 30..51 % of the
# picture at least 55 %; turning the camera by 8 % of the width leaves at most 36 %, by 15 % 18 %, rolling
# it by 3 degrees 41 %, by 5 degrees 23 %; vibration of 2 % of the width leaves at least 59 %.
MOVED_CELLS = 0.45
# The cells a move is judged on: those with at least a quarter of the mean cell's structure in their weakest
# direction (_matched), flat ones (sky, pavement) and those with edges one way only saying nothing of a
# move; and of those, the still ones: where the mean of the gradients holds at least half of the frames'
# gradient energy. Where people pass, or noise is all there is, frames differ from the reference whether
# the camera moved or not.
TEXTURED = 0.25
STILL = 0.5
MIN_TEXTURED = 6  # cells: with fewer the scene is too flat to tell whether the camera moved
FOLLOW_SECONDS = 600.0  # the reference's time constant while the camera is normal
LEARN_SECONDS = 10.0


def _small_gray(frame: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """The BGR frame as a gray uint8 picture WIDTH wide (or `size`, (width, height)), smoothed as it shrinks."""
    if size is None:
        size = (WIDTH, max(GRID_ROWS, round(frame.shape[0] * WIDTH / frame.shape[1])))
    if frame.shape[1] > 4 * size[0]:
        # Sampling a big frame down to twice the size first, without averaging: averaging every pixel of a
        # full HD frame costs ten times the rest together, and the noise it lets through only adds to the
        # difference between frames.
        frame = cv2.resize(frame, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_NEAREST)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    while gray.shape[1] >= 2 * size[0]:  # halving is far cheaper than OpenCV's averaging by an odd factor
        gray = cv2.pyrDown(gray)
    return cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR)  # by under 2: the halving smoothed enough


def _gradients(picture: np.ndarray) -> np.ndarray:
    """[h, w, 2] float32 gradients of the float picture, slightly smoothed: their direction and relative size
    do not change with brightness or contrast, and the smoothing keeps noise out."""
    smooth = cv2.GaussianBlur(picture, (0, 0), 1.0)
    return cv2.merge([cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)])


def _sharpness(picture: np.ndarray) -> float:
    """Laplacian energy over gradient energy of the float picture: falls with the square of the width of its
    edges, and neither contrast nor how much there is in the picture changes it."""
    laplacian = cv2.Laplacian(picture, cv2.CV_32F)
    gx, gy = cv2.Sobel(picture, cv2.CV_32F, 1, 0), cv2.Sobel(picture, cv2.CV_32F, 0, 1)
    return float(cv2.sumElems(laplacian * laplacian)[0] / (cv2.sumElems(gx * gx + gy * gy)[0] + 1e-6))


def _cell_sums(field: np.ndarray) -> np.ndarray:
    """[cells]: the [h, WIDTH, channels] field summed over each cell of the grid, row by row (the rows left
    over at the bottom dropped)."""
    rows = field.shape[0] // GRID_ROWS
    across = field[:rows * GRID_ROWS].reshape(GRID_ROWS, rows, -1).sum(axis=1)  # WIDTH: 8 columns of 20
    return across.reshape(GRID_ROWS, GRID_COLUMNS, -1).sum(axis=2).ravel()


@dataclass
class TamperReference:
    """The camera's normal picture, as the detector compares frames with it: small arrays and two numbers."""

    gradients: np.ndarray  # [h, WIDTH, 2] float32: the mean gradient field of normal frames
    energy: np.ndarray  # [cells] float32: the mean gradient energy of normal frames in each cell of the grid
    contrast: float  # std of gray, in gray levels
    sharpness: float  # _sharpness

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture it was learned on, scaled."""
        return self.gradients.shape[1], self.gradients.shape[0]

    @classmethod
    def learn(cls, frames: Iterable[np.ndarray]) -> "TamperReference":
        """From BGR uint8 frames of the camera's normal footage (any size, all the same); a few seconds of
        them are enough."""
        learner = _Learner()
        for frame in frames:
            learner.add(_Picture(frame, learner.size))
        if not learner.count:
            raise ValueError("TamperReference.learn: no frames")
        return learner.reference()

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"gradients": self.gradients.astype(np.float32), "energy": self.energy.astype(np.float32),
                "contrast": np.array(self.contrast, np.float32), "sharpness": np.array(self.sharpness, np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "TamperReference":
        expected = {"gradients", "energy", "contrast", "sharpness"}
        if missing := sorted(expected - arrays.keys()):
            raise ValueError(f"tamper reference: missing {', '.join(missing)}")
        if extra := sorted(arrays.keys() - expected):
            raise ValueError(f"tamper reference: unexpected {', '.join(extra)}")
        gradients = np.asarray(arrays["gradients"])
        if gradients.ndim != 3 or gradients.shape[1] != WIDTH or gradients.shape[2] != 2 \
                or gradients.shape[0] < GRID_ROWS:
            raise ValueError(f"tamper reference: gradients has shape {gradients.shape}, expected "
                             f"[height >= {GRID_ROWS}, {WIDTH}, 2]")
        if not np.issubdtype(gradients.dtype, np.floating) or not np.isfinite(gradients).all():
            raise ValueError(f"tamper reference: gradients must be finite floats (dtype {gradients.dtype})")
        energy = np.asarray(arrays["energy"])
        if energy.shape != (GRID_ROWS * GRID_COLUMNS,) or not np.issubdtype(energy.dtype, np.floating) \
                or not np.isfinite(energy).all() or (energy < 0).any():
            raise ValueError(f"tamper reference: energy must be {GRID_ROWS * GRID_COLUMNS} finite floats of 0 or "
                             f"more, got shape {energy.shape} ({energy.dtype})")
        numbers = {}
        for name in ("contrast", "sharpness"):
            value = np.asarray(arrays[name])
            if value.size != 1 or not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all() \
                    or float(value.reshape(())) <= 0:
                raise ValueError(f"tamper reference: {name} must be one finite float above 0, got {value!r}")
            numbers[name] = float(value.reshape(()))
        return cls(gradients.astype(np.float32), energy.astype(np.float32), **numbers)


class _Learner:
    """The running mean gradient field and the contrasts and sharpnesses of the frames learned so far."""

    def __init__(self):
        self.count, self.size, self._sum, self._energy = 0, None, None, None
        self._contrast, self._sharpness = [], []

    def add(self, picture: "_Picture") -> None:
        if self._sum is None:
            self._sum, self._energy = picture.gradients.astype(np.float64), picture.energy.astype(np.float64)
        else:
            self._sum += picture.gradients
            self._energy += picture.energy
        self.size = picture.size
        self.count += 1
        self._contrast.append(picture.contrast)
        self._sharpness.append(picture.sharpness)

    def reference(self) -> TamperReference:
        # Medians: a frame caught mid exposure change or with someone at the lens does not move them.
        return TamperReference((self._sum / self.count).astype(np.float32),
                               (self._energy / self.count).astype(np.float32),
                               max(float(np.median(self._contrast)), UNIFORM),
                               max(float(np.median(self._sharpness)), 1e-6))


class _Picture:
    """What every measure is taken on: the frame small and gray, with its gradients, contrast and sharpness."""

    def __init__(self, frame: np.ndarray, size: tuple[int, int] | None):
        self.gray = _small_gray(frame, size)
        self.size = (self.gray.shape[1], self.gray.shape[0])
        picture = self.gray.astype(np.float32)
        self.gradients = _gradients(picture)
        self.energy = _cell_sums(self.gradients * self.gradients)
        self.contrast = float(cv2.meanStdDev(self.gray)[1][0, 0])
        self.sharpness = _sharpness(picture)


class TamperDetector:
    """One camera's tamper state: feed it every new frame with its time (update); see the module's doc.
    `after`: seconds a condition must hold to start a tamper, and be gone to end it; `learn_seconds`: of
    frames to learn a reference from, when given none."""

    def __init__(self, reference: TamperReference | None, after: float = 3.0, learn_seconds: float = LEARN_SECONDS):
        # Its own copy: it follows this camera, and the caller's may serve others.
        self.reference = None if reference is None else replace(
            reference, gradients=reference.gradients.copy(), energy=reference.energy.copy())
        self.after, self.learn_seconds = after, learn_seconds
        self._learner, self._learn_start = None, None
        self._previous, self._last_t = None, None
        self._since = dict.fromkeys(REASONS)  # when each condition began holding, without a break
        self._active, self._clear_since = None, None
        self._showing: set[str] = set()  # the conditions the latest frame showed

    @property
    def active(self) -> str | None:
        return self._active

    @property
    def suspect(self) -> bool:
        """A tamper is in force, or the latest frame shows a condition that may become one: what the agent
        keeps from its scoring, so that a lens being covered never raises an anomaly while the tamper is held.
        Never for a freeze: a still scene from a clean encoder often looks like one, and a repeated picture
        moves nothing, so it cannot raise an anomaly anyway; what moves again is scored at once."""
        return self._active not in (None, "frozen") or bool(self._showing - {"frozen"})

    def update(self, frame: np.ndarray, t: float) -> list[dict]:
        """Feed one BGR frame with its time (seconds, any epoch, increasing). Returns the changes:
        [{"state": "start", "reason": ..., "detail": ...}] once a condition has held for `after` seconds,
        [{"state": "end", "reason": ..., "detail": ...}] once the one in force has been gone for `after`
        seconds; both in one call when one tamper gives way to another."""
        # A picture of another shape is scaled to the reference's (or the one being learned): it reads as moved.
        size = self.reference.size if self.reference else self._learner.size if self._learner else None
        picture = _Picture(frame, size)
        if self._previous is not None and self._previous.shape != picture.gray.shape:
            self._previous = None  # the camera's picture changed shape: nothing to compare with
        if self._last_t is not None and t < self._last_t:  # a new timeline (a file looped, a clock reset)
            self._since = {reason: None if since is None else t for reason, since in self._since.items()}
            self._clear_since = None if self._clear_since is None else t
        conditions = self._conditions(picture)
        self._showing = set(conditions)
        self._follow(picture, t, conditions)
        self._previous, self._last_t = picture.gray, t

        for reason in REASONS:
            if reason not in conditions:
                self._since[reason] = None
            elif self._since[reason] is None:
                self._since[reason] = t
        changes = []
        if self._active is not None:
            if self._active in conditions:
                self._clear_since = None
            else:
                self._clear_since = t if self._clear_since is None else self._clear_since
                if t - self._clear_since >= self.after:
                    changes.append({"state": "end", "reason": self._active,
                                    "detail": f"gone for {t - self._clear_since:.1f} s"})
                    self._active, self._clear_since = None, None
        if self._active is None:
            for reason in REASONS:
                since = self._since[reason]
                if since is not None and t - since >= self.after:
                    changes.append({"state": "start", "reason": reason,
                                    "detail": f"{conditions[reason]}, for {t - since:.1f} s"})
                    self._active = reason
                    break
        return changes

    def _conditions(self, picture: _Picture) -> dict[str, str]:
        """The conditions the frame shows, each with a line on what was measured."""
        conditions, ref = {}, self.reference
        if picture.contrast < (max(UNIFORM, COVERED_CONTRAST * ref.contrast) if ref else UNIFORM):
            conditions["covered"] = f"contrast {picture.contrast:.1f} gray levels" + (
                f" (normal {ref.contrast:.1f})" if ref else "") + f", mean gray {picture.gray.mean():.0f}"
        if self._previous is not None:
            difference = float(cv2.absdiff(picture.gray, self._previous).mean())
            if difference < FROZEN_DIFFERENCE:
                conditions["frozen"] = f"consecutive frames differ by {difference:.3f} gray levels"
        if ref is None:
            return conditions
        sharpness = picture.sharpness / ref.sharpness
        if sharpness < DEFOCUSED_SHARPNESS:
            conditions["defocused"] = f"sharpness {100 * sharpness:.0f} % of normal"
        matched = self._matched(picture)
        if matched is not None and matched < MOVED_CELLS:
            conditions["moved"] = f"{100 * matched:.0f} % of the scene's still structure in place"
        return conditions

    def _matched(self, picture: _Picture) -> float | None:
        """The fraction of the cells judged (TEXTURED, STILL) whose gradients still correlate with the
        reference's, or None where the scene has too few of them."""
        reference = self.reference.gradients
        gx2, gy2 = _cell_sums(reference[..., :1] ** 2), _cell_sums(reference[..., 1:] ** 2)
        gxy = _cell_sums(reference[..., :1] * reference[..., 1:])
        # Texture is the structure a cell has in its weakest direction (the smaller eigenvalue of its
        # structure tensor): edges all one way, like a kerb, look the same after a move along them.
        weakest = (gx2 + gy2) / 2 - np.sqrt(((gx2 - gy2) / 2) ** 2 + gxy ** 2)
        textured = (weakest >= TEXTURED * weakest.mean()) & (gx2 + gy2 >= STILL * self.reference.energy)
        if textured.sum() < MIN_TEXTURED:
            return None
        correlation = _cell_sums(reference * picture.gradients) / np.sqrt((gx2 + gy2) * picture.energy + 1e-6)
        return float(np.mean(correlation[textured] > CELL_MATCH))

    def _follow(self, picture: _Picture, t: float, conditions: dict[str, str]) -> None:
        """Learn the reference (none yet) or let it follow a normal frame."""
        if conditions or self._active is not None:
            return
        if self.reference is None:
            if self._learner is None:
                self._learner, self._learn_start = _Learner(), t
            self._learner.add(picture)
            if t - self._learn_start >= self.learn_seconds:
                self.reference, self._learner = self._learner.reference(), None
            return
        if self._last_t is None or t <= self._last_t:
            return
        rate = float(1.0 - np.exp(-(t - self._last_t) / FOLLOW_SECONDS))
        ref = self.reference
        ref.gradients += rate * (picture.gradients - ref.gradients)
        ref.energy += rate * (picture.energy - ref.energy)
        ref.contrast += rate * (max(picture.contrast, UNIFORM) - ref.contrast)
        ref.sharpness += rate * (picture.sharpness - ref.sharpness)


# A calibration's reference sits beside its bundle: <state_dir>/calibration/<camera>.tamper.safetensors.
REFERENCE_SUFFIX = ".tamper.safetensors"


def save_reference(path: Path, reference: TamperReference) -> None:
    """Writes the reference (safetensors: no pickle) under a temporary name first, so a reader never sees half."""
    partial = path.with_name(path.name + ".part")
    safetensors.numpy.save_file(reference.to_arrays(), str(partial))
    partial.replace(path)


def load_reference(path: Path) -> TamperReference | None:
    """The camera's reference from its calibration, or None when it has none or it cannot be read (then the
    detector learns one from the camera's first seconds; the reason is logged)."""
    if not path.exists():
        return None
    try:
        return TamperReference.from_arrays(safetensors.numpy.load_file(str(path)))
    except (OSError, ValueError, safetensors.SafetensorError) as exc:
        log.warning("tamper reference %s is unusable (%s): learning one from the camera's first seconds", path, exc)
        return None
