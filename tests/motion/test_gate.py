"""The motion gate, masks and zones as pure functions of images."""

from __future__ import annotations

import numpy as np

from edge.camera.masks import apply_masks, polygon_mask
from edge.config import MotionConfig
from edge.motion.gate import MotionState, MotionTracker, score_motion

CONFIG = MotionConfig(threshold=25, min_area=0.01, blur=1, background_alpha=0.05)


def scene(square_at: int | None = None, size: int = 40) -> np.ndarray:
    img = np.full((240, 320, 3), 90, np.uint8)
    if square_at is not None:
        img[100 : 100 + size, square_at : square_at + size] = 230
    return img


def test_static_scene_has_no_motion() -> None:
    state = MotionState()
    results = [score_motion(state, scene(), CONFIG, 320) for _ in range(5)]
    assert not any(r.moving for r in results)
    assert results[-1].score == 0.0


def test_a_moving_object_is_motion_with_a_box() -> None:
    state = MotionState()
    score_motion(state, scene(), CONFIG, 320)
    result = score_motion(state, scene(square_at=150), CONFIG, 320)
    assert result.moving
    assert abs(result.score - 1600 / (320 * 240)) < 0.002
    x, y, w, h = result.boxes[0]
    assert x <= 150 <= x + w and y <= 100 <= y + h


def test_small_changes_stay_below_min_area() -> None:
    state = MotionState()
    score_motion(state, scene(), CONFIG, 320)
    assert not score_motion(state, scene(square_at=150, size=8), CONFIG, 320).moving


def test_motion_inside_a_privacy_mask_or_outside_zones_is_ignored() -> None:
    left_half = [[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]]
    state = MotionState()
    score_motion(state, scene(), CONFIG, 320, masks=left_half)
    assert not score_motion(state, scene(square_at=40), CONFIG, 320, masks=left_half).moving
    state = MotionState()
    score_motion(state, scene(), CONFIG, 320, zones=left_half)
    assert not score_motion(state, scene(square_at=250), CONFIG, 320, zones=left_half).moving
    state = MotionState()
    score_motion(state, scene(), CONFIG, 320, zones=left_half)
    assert score_motion(state, scene(square_at=40), CONFIG, 320, zones=left_half).moving


def test_analysis_is_done_at_low_resolution() -> None:
    big = np.full((960, 1280, 3), 90, np.uint8)
    state = MotionState()
    score_motion(state, big, CONFIG, 320)
    assert state.background is not None and state.background.shape == (240, 320)


def test_masks_black_out_exactly_the_polygon_at_any_resolution() -> None:
    polygon = [[[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]]
    for h, w in ((240, 320), (720, 1280)):
        img = np.full((h, w, 3), 200, np.uint8)
        out = apply_masks(img, polygon)
        mask = polygon_mask(polygon, h, w) > 0
        assert (out[mask] == 0).all()
        assert (out[~mask] == 200).all()
        assert 0.24 < mask.mean() < 0.27
        assert (img == 200).all()  # the input is untouched


def test_tracker_emits_start_once_and_end_after_quiet() -> None:
    tracker = MotionTracker(end_after_s=3.0)
    seen = [
        tracker.update(moving, t)
        for t, moving in [(0, True), (1, True), (2, False), (3.9, False), (4.1, False), (5, False)]
    ]
    assert seen == ["motion_start", None, None, None, "motion_end", None]
