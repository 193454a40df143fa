import numpy as np
import pytest

from vad_edge.model import fusion
from vad_edge.model.motion_places import (BINS, GRID, PRIORS, SPEED_EDGES, MotionPlaces, MotionPlacesError,
                                          cell_histogram)
from vad_edge.model.object_speed import clip_flow

SIDE = 128
CELL = SIDE // GRID


def uniform_flow(dx: float, dy: float = 0.0, rows=slice(None), columns=slice(None)) -> np.ndarray:
    """A still [SIDE, SIDE, 2] flow field with (dx, dy) pixels of motion over the given rows and columns."""
    flow = np.zeros((SIDE, SIDE, 2), np.float32)
    flow[rows, columns] = (dx, dy)
    return flow


def test_each_moving_pixel_falls_in_its_cell_and_speed_bin():
    histogram = cell_histogram(uniform_flow(3.0, 0.0, rows=slice(0, CELL), columns=slice(0, 2 * CELL)))
    assert histogram.shape == (GRID, GRID, BINS) and histogram.dtype == np.uint16
    # Speed 3 lies between the edges 2 and 4: the second bin, in the first row's first two cells only.
    assert histogram[0, 0, 1] == histogram[0, 1, 1] == CELL * CELL
    assert histogram.sum() == 2 * CELL * CELL
    # Direction does not matter, speed does; below the 1-pixel bar nothing moves.
    assert np.array_equal(cell_histogram(uniform_flow(0.0, -3.0, rows=slice(0, CELL), columns=slice(0, 2 * CELL))),
                          histogram)
    assert cell_histogram(uniform_flow(20.0))[..., BINS - 1].sum() == SIDE * SIDE
    assert cell_histogram(uniform_flow(0.5)).sum() == 0


def test_speed_edges_scale_with_the_input_side():
    def histogram_at_twice_the_side(speed: float) -> np.ndarray:
        return cell_histogram(np.full((2 * SIDE, 2 * SIDE, 2), (speed, 0.0), np.float32))

    assert histogram_at_twice_the_side(1.5).sum() == 0  # under the 1-pixel bar, 2 pixels at this side
    assert histogram_at_twice_the_side(3.0)[..., 0].sum() == (2 * SIDE) ** 2  # 1.5 px at 128: the first bin
    assert cell_histogram(uniform_flow(3.0))[..., 1].sum() == SIDE * SIDE  # where 3 px at 128 is the second
    assert histogram_at_twice_the_side(2 * SPEED_EDGES[-1] + 1)[..., BINS - 1].sum() == (2 * SIDE) ** 2


@pytest.mark.parametrize("flow", [np.zeros((SIDE, SIDE), np.float32), np.zeros((SIDE, SIDE, 3), np.float32),
                                  np.zeros((GRID - 1, SIDE, 2), np.float32)])
def test_bad_flows_are_refused(flow):
    with pytest.raises(ValueError, match="flow field"):
        cell_histogram(flow)


def normal_footage(videos: int = 8, clips: int = 20, seed: int = 0) -> list[np.ndarray]:
    """Clips where walkers (speed 3) cross the top half's cells and cyclists (speed 12) the bottom half's."""
    rng = np.random.default_rng(seed)
    footage = []
    for _ in range(videos):
        clips_of_video = []
        for _ in range(clips):
            top, bottom = rng.integers(0, GRID // 2), rng.integers(GRID // 2, GRID)
            flow = uniform_flow(3.0, 0.0, rows=slice(top * CELL, (top + 1) * CELL))
            flow[bottom * CELL:(bottom + 1) * CELL] = (12.0, 0.0)
            clips_of_video.append(cell_histogram(flow))
        footage.append(np.stack(clips_of_video))
    return footage


def test_a_speed_is_judged_by_the_place_where_it_happens():
    footage = normal_footage()
    places = MotionPlaces.fit(footage)
    assert places.prior in PRIORS

    def evidence(speed: float, row: int) -> float:
        flow = uniform_flow(speed, 0.0, rows=slice(row * CELL, (row + 1) * CELL), columns=slice(0, 4 * CELL))
        return float(places.score(cell_histogram(flow)[None])[0])

    walker_on_path, cyclist_on_path = evidence(3.0, 2), evidence(12.0, 2)
    cyclist_on_road, walker_on_road = evidence(12.0, 12), evidence(3.0, 12)
    assert cyclist_on_path > 10 * max(walker_on_path, 1.0)  # fast where things walk
    assert walker_on_road > 10 * max(cyclist_on_road, 1.0)  # slow where things ride
    assert places.score(np.zeros((1, GRID, GRID, BINS)))[0] == 0.0  # nothing moves: no evidence


def test_the_held_out_tail_is_where_normal_clips_rarely_go():
    footage = normal_footage()
    places = MotionPlaces.fit(footage)
    tail = places.held_out_tail(footage)
    in_sample = places.score(np.concatenate(footage))
    assert tail > 0 and tail >= np.quantile(in_sample, 0.5)
    # A single short recording is cut into as many pieces as there are folds; a single clip has no folds.
    assert MotionPlaces.fit(footage[:1]).held_out_tail(footage[:1]) > 0
    assert MotionPlaces.fit([footage[0][:1]]).prior == PRIORS[len(PRIORS) // 2]


def test_a_long_recording_is_cut_into_pieces_for_the_folds():
    long = [np.concatenate(normal_footage(videos=8, clips=60))]  # 480 clips: 3 pieces of at most 200
    places = MotionPlaces.fit(long)
    assert places.held_out_tail(long) > 0


def test_footage_without_motion_is_named():
    still = [np.zeros((5, GRID, GRID, BINS), np.uint16)] * 4
    with pytest.raises(MotionPlacesError, match="nothing moved"):
        MotionPlaces.fit(still)
    with pytest.raises(MotionPlacesError, match="no normal clips"):
        MotionPlaces.fit([np.zeros((0, GRID, GRID, BINS), np.uint16)])
    with pytest.raises(MotionPlacesError, match=r"expected clips' histograms \[clips, 16, 16, bins\]"):
        MotionPlaces.fit([np.zeros((5, GRID, GRID, BINS), np.uint16), np.zeros((5, GRID, GRID, BINS + 1), np.uint16)])
    with pytest.raises(MotionPlacesError, match=r"expected clips' histograms"):
        MotionPlaces.fit([np.zeros((5, GRID + 1, GRID, BINS), np.uint16)])
    places = MotionPlaces.fit(normal_footage())
    with pytest.raises(MotionPlacesError, match="too little motion"):
        places.held_out_tail(still)


def test_metadata_round_trip_and_bad_metadata():
    places = MotionPlaces.fit(normal_footage())
    loaded = MotionPlaces.from_metadata(places.to_metadata())
    assert loaded.prior == places.prior and np.array_equal(loaded.counts, places.counts)
    clips = np.concatenate(normal_footage(seed=5))
    np.testing.assert_array_equal(loaded.score(clips), places.score(clips))
    good = places.to_metadata()
    for bad in (None, {}, {**good, "grid": 8}, {**good, "counts": good["counts"][1:]}, {**good, "prior": 0.0},
                {**good, "counts": [-1] + good["counts"][1:]}, {**good, "counts": [0.5] + good["counts"][1:]},
                {**good, "counts": [0] * len(good["counts"])}, {**good, "prior": "x"}):
        with pytest.raises(MotionPlacesError, match="motion-places metadata"):
            MotionPlaces.from_metadata(bad)


def test_the_places_fusion_adds_the_evidence_over_its_normal_tail():
    from test_model import PERSPECTIVE

    terms = np.array([[2.0, 0.1, 4.0, 9.0], [4.0, 0.3, 6.0, 1.0]])
    speeds, evidence = np.array([0.5, 1.5]), np.array([0.0, 8.0])
    term = fusion.PlacesTerm(4.0, MotionPlaces.fit(normal_footage()))
    fused = fusion.fit("motion-cluster-speed-places", terms, speeds, PERSPECTIVE, term)
    without = fusion.fit("motion-cluster-speed", terms, speeds, PERSPECTIVE)
    np.testing.assert_allclose(fused.score(terms, speeds, evidence) - without.score(terms, speeds), evidence / 4.0)
    assert fusion.from_metadata(fused.to_metadata()).places.normal_tail == 4.0
    with pytest.raises(fusion.FusionError, match="motion-places evidence"):
        fused.score(terms, speeds)
    with pytest.raises(fusion.FusionError, match="motion-places term is missing"):
        fusion.fit("motion-cluster-speed-places", terms, speeds, PERSPECTIVE)
    with pytest.raises(fusion.FusionError, match="motion-places term is unexpected"):
        fusion.fit("motion-cluster-speed", terms, speeds, PERSPECTIVE, term)
    metadata = fused.to_metadata()
    for bad in (None, {"normal_tail": 0.0, "model": metadata["places"]["model"]},
                {"normal_tail": 1.0, "model": {**metadata["places"]["model"], "grid": 4}}):
        with pytest.raises(fusion.FusionError, match="fusion metadata"):
            fusion.from_metadata({**metadata, "places": bad})


def test_a_real_clip_flow_feeds_the_histogram():
    """The object-speed term's flow of a moving textured block (rows 40-56, columns 20-44 over the clip) lands
    in the block's cells, give or take the cell the flow's smoothing window spills into."""
    from test_object_speed import moving_block

    moving = cell_histogram(clip_flow(moving_block(shift=2, top=40))).sum(axis=2)
    rows, columns = slice(40 // CELL - 1, 56 // CELL + 1), slice(20 // CELL - 1, 44 // CELL + 1)
    assert moving.sum() > 0 and moving[rows, columns].sum() > 0.9 * moving.sum()
