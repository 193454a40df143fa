import numpy as np
import pytest

from vad_edge.model.object_speed import (BANDS, CELLS, MIN_PER_BAND, UNKNOWN, Perspective, PerspectiveError,
                                         clip_flow, objects_in)


def clip_objects(window: np.ndarray) -> np.ndarray:
    """The moving things of one window, as the Scorer finds them: from its one flow."""
    return objects_in(clip_flow(window))


def moving_block(shift: int, top: int = 40, side: int = 128, seed: int = 0) -> np.ndarray:
    """A textured 16 x 16 block on a flat background, `shift` pixels further right in each frame."""
    texture = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    window = np.full((5, side, side, 3), 90, dtype=np.uint8)
    for i in range(5):
        window[i, top:top + 16, 20 + i * shift:36 + i * shift] = texture
    return window


def test_a_moving_block_is_one_thing_at_its_speed_and_place():
    things = clip_objects(moving_block(shift=2))
    assert len(things) >= 1
    fastest = things[np.argmax(things[:, 0])]
    assert 5.0 < fastest[0] < 11.0  # 8 pixels over the clip; the flow inside a block is smoothed
    assert abs(fastest[1] - 48 / 128) < 0.1  # the block's centre row
    assert abs(fastest[2] - 32 / 128) < 0.1  # and column, halfway along its path (x 28 to 36)


def test_nothing_moves_in_a_still_clip():
    window = np.repeat(moving_block(shift=0)[:1], 5, axis=0)
    assert clip_objects(window).shape == (0, 3)
    assert Perspective(tuple([1.0] * BANDS)).score(clip_objects(window)) == 0.0


def test_a_faster_block_scores_higher_against_the_same_perspective():
    perspective = Perspective.fit([clip_objects(moving_block(shift=1, seed=s)) for s in range(MIN_PER_BAND)])
    slow, fast = (perspective.score(clip_objects(moving_block(shift=s, seed=99))) for s in (1, 3))
    assert 0.5 < slow < 2.0 < fast


def test_each_band_has_its_own_normal_speed():
    rng = np.random.default_rng(1)
    # Things spread along each band's row, fewer than MIN_PER_BAND in any one cell: the bands decide.
    columns = np.linspace(0.01, 0.99, 40)
    top = np.column_stack([rng.uniform(1, 2, 40), np.full(40, 0.02), columns])  # far away: slow
    bottom = np.column_stack([rng.uniform(8, 10, 40), np.full(40, 0.97), columns])  # near: fast
    perspective = Perspective.fit([top, bottom])
    assert set(perspective.cells) == {UNKNOWN}
    assert perspective.bands[0] == pytest.approx(np.median(top[:, 0]))
    assert perspective.bands[-1] == pytest.approx(np.median(bottom[:, 0]))
    overall = np.median(np.concatenate([top, bottom])[:, 0])
    assert perspective.bands[BANDS // 2] == pytest.approx(overall)  # no normal thing there
    # The same 4 px is fast far away and slow near by.
    far, near = (perspective.score(np.array([[4.0, row, 0.5]])) for row in (0.02, 0.97))
    assert far > 1.5 > 1.0 > near


def test_a_cell_with_enough_normal_things_has_its_own_speed():
    """A path across the frame at an angle: in one band of rows, things near the camera's side go faster."""
    rng = np.random.default_rng(2)
    left = np.column_stack([rng.uniform(1, 2, 30), np.full(30, 0.5), np.full(30, 0.1)])
    right = np.column_stack([rng.uniform(6, 8, 30), np.full(30, 0.5), np.full(30, 0.9)])
    perspective = Perspective.fit([left, right])
    row = int(0.5 * CELLS) * CELLS
    assert perspective.cells[row] == pytest.approx(np.median(left[:, 0]))
    assert perspective.cells[row + CELLS - 1] == pytest.approx(np.median(right[:, 0]))
    assert perspective.cells[row + CELLS // 2] == UNKNOWN  # nothing passed there: the band's speed counts
    band = np.median(np.concatenate([left, right])[:, 0])
    assert perspective.score(np.array([[band, 0.5, 0.5]])) == pytest.approx(1.0)
    # 5 px is fast on the left, slow on the right, of the same row.
    left_side, right_side = (perspective.score(np.array([[5.0, 0.5, column]])) for column in (0.1, 0.9))
    assert left_side > 2.0 > 1.0 > right_side


def test_too_little_motion_to_learn_from_is_named():
    with pytest.raises(PerspectiveError, match="moving things"):
        Perspective.fit([np.zeros((0, 3)), np.array([[1.0, 0.5, 0.5]])])


@pytest.mark.parametrize("window", [np.zeros((5, 32, 32, 3), np.float32), np.zeros((4, 32, 32, 3), np.uint8),
                                    np.zeros((5, 32, 32), np.uint8)])
def test_bad_windows_are_refused(window):
    with pytest.raises(ValueError, match="uint8 window"):
        clip_objects(window)


def test_metadata_round_trip_and_bad_metadata():
    bands = tuple(float(b) for b in range(1, BANDS + 1))
    perspective = Perspective(bands, tuple(UNKNOWN if c % 3 else 0.5 + c for c in range(CELLS * CELLS)))
    assert Perspective.from_metadata(perspective.to_metadata()) == perspective
    good = perspective.to_metadata()
    for bad in (None, [1.0] * (BANDS - 1), [1.0] * (BANDS - 1) + [0.0], ["x"] * BANDS, {"bands": list(bands)},
                {**good, "cells": good["cells"][1:]}, {**good, "cells": [-1.0] * (CELLS * CELLS)},
                {**good, "cells": [float("inf")] * (CELLS * CELLS)}):
        with pytest.raises(PerspectiveError):
            Perspective.from_metadata(bad)


def test_bundles_made_before_the_cells_score_as_they_did():
    """Checkpoints and site bundles from before the cells recorded the bands alone, as a list."""
    bands = [float(b) for b in range(1, BANDS + 1)]
    perspective = Perspective.from_metadata(bands)
    assert set(perspective.cells) == {UNKNOWN}
    things = np.array([[6.0, 0.02, 0.3], [20.0, 0.97, 0.8]])
    assert perspective.score(things) == pytest.approx(max(6.0 / bands[0], 20.0 / bands[-1]))
