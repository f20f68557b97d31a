"""The pure matcher and the per-visit vote."""

from __future__ import annotations

import numpy as np

from edge.vision import recognise as R


def _e(x: float) -> np.ndarray:
    v = np.zeros(128, np.float32)
    v[0] = x
    return v


TEMPLATES = {"alice": np.stack([_e(0.0), _e(0.05)]), "bob": np.stack([_e(3.0)])}
TH = R.Thresholds(recognise=0.5, unknown=0.7, vote_frames=3, vote_min=2)


def test_two_thresholds() -> None:
    assert R.match(_e(0.3), TEMPLATES, TH).name == "alice"
    assert R.match(_e(0.65), TEMPLATES, TH).name == ""  # between: no vote
    assert R.match(_e(1.5), TEMPLATES, TH).name == R.UNKNOWN
    assert R.match(_e(1.5), {}, TH).name == R.UNKNOWN


def test_vote_needs_agreement() -> None:
    v = R.Vote(TH)
    assert v.add(R.Match("alice", "alice", 0.3)) is None
    assert v.add(R.Match("", "alice", 0.6)) is None
    assert v.add(R.Match("alice", "alice", 0.3)) == "alice"
    assert v.add(R.Match("alice", "alice", 0.3)) is None  # decided once


def test_vote_settles_on_unknown() -> None:
    v = R.Vote(TH)
    out = [v.add(R.Match("", "alice", 0.6)) for _ in range(6)]
    assert out[-1] == R.UNKNOWN and out[:-1] == [None] * 5


def test_quality_gates() -> None:
    th = R.Thresholds(min_face_px=40, min_sharpness=15.0)
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)
    flat = np.full((150, 150, 3), 128, np.uint8)
    assert R.sharpness(sharp) > 1000 and R.sharpness(flat) == 0.0
    assert R.passes_quality(60, R.sharpness(sharp), th)
    assert not R.passes_quality(30, R.sharpness(sharp), th)  # too small
    assert not R.passes_quality(60, R.sharpness(flat), th)  # too blurred
