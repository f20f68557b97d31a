"""`faces enroll` and `faces forget` are all-or-nothing: SIGKILL at each step leaves, once the gallery is opened
again, either the old enrolment or the new one in full, and never a photo or template that `faces list` cannot
see."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.gallery import Gallery, encode_chip
from tests.footage.crash import killed_at

NAME = "Ada Lovelace"
SLUG = "ada-lovelace"


def photos(count: int, tag: str) -> list[np.ndarray]:
    """Face chips (the gallery stores nothing else), one grey level per enrolment and photo."""
    return [np.full((150, 150, 3), (10 if tag == "old" else 100) + i, np.uint8) for i in range(count)]


def templates(count: int, value: float) -> np.ndarray:
    return np.full((count, 128), value, np.float32)


def enroll(state: Path, count: int, tag: str, value: float) -> None:
    Gallery(state).enroll(NAME, photos(count, tag), templates(count, value),
                          Consent("Ada Lovelace", date(2026, 1, 2), DEFAULT_PURPOSE, date(2099, 12, 31)), "m")


def consistent(state: Path) -> list[tuple[str, int, float, bytes]]:
    """Reopen the gallery (which recovers) and check every file on disk belongs to someone `faces list` shows;
    returns (name, photos, template value, first photo) per person."""
    gallery = Gallery(state)
    people = gallery.people()
    root = state / "faces"
    on_disk = sorted(os.listdir(root)) if root.exists() else []
    assert on_disk == sorted(SLUG for _ in people), f"leftovers beside the enrolled people: {on_disk}"
    out = []
    found = gallery.templates()
    for person in people:
        folder = root / SLUG
        assert sorted(p.name for p in folder.iterdir()) == ["person.json", "photos", "templates.npy"]
        shots = gallery.photos(person.name)
        assert len(shots) == person.photos == len(found[person.name])
        values = set(found[person.name].ravel().tolist())
        assert len(values) == 1  # one enrolment's templates, never a mix
        out.append((person.name, person.photos, values.pop(), shots[0].read_bytes()))
    return out


OLD = [(NAME, 2, 1.0, encode_chip(photos(1, "old")[0]))]
NEW = [(NAME, 3, 2.0, encode_chip(photos(1, "new")[0]))]


@pytest.mark.parametrize(
    ("point", "after"),
    [("enroll:photos-written", []), ("enroll:staged", []), ("enroll:renamed", NEW)],
)
def test_kill_during_a_first_enrolment(tmp_path: Path, point: str, after: list[object]) -> None:
    killed_at(point, lambda: enroll(tmp_path, 3, "new", 2.0))
    assert consistent(tmp_path) == after
    enroll(tmp_path, 3, "new", 2.0)  # the owner runs it again: it works
    assert consistent(tmp_path) == NEW


@pytest.mark.parametrize(
    ("point", "after"),
    [
        ("enroll:photos-written", OLD),
        ("enroll:staged", OLD),
        ("enroll:old-moved-aside", NEW),  # the old enrolment was moved aside: the new one is completed
        ("enroll:renamed", NEW),
        ("gallery:removing", NEW),  # killed while deleting the replaced enrolment
    ],
)
def test_kill_during_a_re_enrolment(tmp_path: Path, point: str, after: list[object]) -> None:
    enroll(tmp_path, 2, "old", 1.0)
    killed_at(point, lambda: enroll(tmp_path, 3, "new", 2.0))
    assert consistent(tmp_path) == after


@pytest.mark.parametrize("point", ["forget:renamed", "gallery:removing"])
def test_kill_during_forget_leaves_nothing_once_reopened(tmp_path: Path, point: str) -> None:
    enroll(tmp_path, 3, "new", 2.0)
    killed_at(point, lambda: Gallery(tmp_path).forget(NAME))
    leftovers = [p for p in (tmp_path / "faces").rglob("*") if p.is_file()]
    assert leftovers and all(".trash-" in str(p) for p in leftovers)  # the crash really left some behind
    assert Gallery(tmp_path).people() == []  # opening the gallery deletes them
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert not Gallery(tmp_path).forget(NAME)
