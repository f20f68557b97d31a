"""Face redaction: the pure box logic (tiles, margins, carrying across frames, the owner's kept region), and on
real photos the shipped finders blur every face so that the detector finds none and the embedder cannot tie
what is left to the person."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.config import FacesConfig
from edge.errors import RequestError, StorageError
from edge.footage import redact
from edge.footage.redact import (
    RedactionState,
    Redactor,
    blur_boxes,
    check_frame,
    grow,
    parse_region,
    pixelate_outside,
    redact_frame,
    redact_stream,
    tiles,
)

PHOTOS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/two_people.jpg",
          "face_recognition/examples/biden.jpg", "facenet_pytorch/multiface.jpg"]
FOOTAGE = Path(redact.__file__).parent


def noise(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_the_footage_package_never_imports_vision() -> None:
    for path in sorted(FOOTAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "edge.vision" or n.startswith("edge.vision.") for n in names), path.name


def test_blur_touches_only_the_grown_boxes() -> None:
    image = noise()
    out = blur_boxes(image, [(40, 40, 20, 20), (150, 110, 40, 40), (0, 0, 0, 5)])
    mask = np.zeros((120, 160), bool)
    mask[34:66, 34:66] = True  # box plus a 30 % margin (6 px) on every side
    mask[98:120, 138:160] = True  # grown by 12 px, clipped at the border
    assert np.array_equal(out[~mask], image[~mask])
    assert out[34:66, 34:66].std() < 0.5 * image[34:66, 34:66].std()
    assert image is not out


def test_grow_clips_to_the_frame_and_drops_empty_boxes() -> None:
    assert grow((10, 10, 10, 10), 0.5, 100, 100) == (5, 5, 20, 20)
    assert grow((-5, 90, 20, 20), 0.0, 100, 100) == (0, 90, 15, 10)
    assert grow((0, 0, 0, 10), 0.3, 100, 100) is None
    assert grow((200, 200, 10, 10), 0.3, 100, 100) is None


@pytest.mark.parametrize(("width", "height", "size", "overlap"),
                         [(1280, 720, 360, 0.3), (1920, 1080, 540, 0.25), (480, 270, 270, 0.3), (100, 80, 200, 0.3)])
def test_tiles_cover_the_frame_and_overlap_enough_for_a_face(width: int, height: int, size: int,
                                                             overlap: float) -> None:
    boxes = tiles(width, height, size, overlap)
    covered = np.zeros((height, width), bool)
    for x, y, w, h in boxes:
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert (w, h) == (min(size, width), min(size, height))
        covered[y : y + h, x : x + w] = True
    assert covered.all()
    # any face up to overlap * size wide lies whole inside at least one tile
    face = int(overlap * min(size, width, height))
    rng = np.random.default_rng(1)
    for _ in range(200):
        fx, fy = int(rng.integers(0, width - face + 1)), int(rng.integers(0, height - face + 1))
        assert any(x <= fx and fx + face <= x + w and y <= fy and fy + face <= y + h for x, y, w, h in boxes)


def test_parse_region_reads_pixels_and_names_what_is_wrong() -> None:
    assert parse_region("400,100,480,560") == (400, 100, 480, 560)
    assert parse_region(" 0, 0, 10, 10 ") == (0, 0, 10, 10)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,10", "-1,0,10,10"):
        with pytest.raises(RequestError, match="--keep-region"):
            parse_region(bad)


def test_keep_region_pixelates_everything_else() -> None:
    image = noise(240, 320)
    out = pixelate_outside(image, (100, 50, 80, 60))
    assert np.array_equal(out[50:110, 100:180], image[50:110, 100:180])
    outside = np.ones((240, 320), bool)
    outside[50:110, 100:180] = False
    assert not np.array_equal(out[outside], image[outside])
    block = max(8, -(-320 // redact.KEEP_BLOCKS))
    assert (out[0:block, 0:block] == out[0, 0]).all()  # one flat tile: nothing of a face survives there


def test_stream_carries_each_find_to_the_frames_around_it() -> None:
    frames = [noise(seed=i) for i in range(30)]
    finds = {12: [(60, 40, 20, 20)]}
    calls: list[int] = []

    def find(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        index = next(i for i, f in enumerate(frames) if f is image)
        calls.append(index)
        return finds.get(index, [])

    redactor = Redactor(find, carry_seconds=0.5)
    out = list(redact_stream(frames, redactor, fps=10.0))
    assert calls == list(range(30)) and len(out) == 30  # each frame found once, all frames out, in order
    blurred = [i for i, o in enumerate(out) if o.boxes]
    assert blurred == list(range(7, 18))  # 0.5 s at 10 fps = 5 frames before and after frame 12
    for i, o in enumerate(out):
        if o.boxes:
            assert o.boxes == ((54, 34, 32, 32),)
            assert not np.array_equal(o.image[40:60, 60:80], frames[i][40:60, 60:80])
        else:
            assert np.array_equal(o.image, frames[i])
    assert out[12].found == ((60, 40, 20, 20),) and out[11].found == ()


def test_stream_holds_only_the_carry_window() -> None:
    taken = 0

    def frames() -> Any:
        nonlocal taken
        for i in range(50):
            taken += 1
            yield noise(seed=i)

    stream = redact_stream(frames(), Redactor(lambda image: [], carry_seconds=0.3), fps=10.0)
    for i, _ in enumerate(stream):
        assert taken <= i + 4  # at most carry (3) frames read ahead of the one handed out


def test_a_replayed_stream_redacts_the_same_boxes_in_the_same_frames() -> None:
    """With replay (the export: the clip decoded a second time) the frames emitted come from the replay, and every
    frame gets exactly the boxes, pixels and finds it gets when the frames are held."""
    frames = [noise(seed=i) for i in range(40)]
    finds = {3: [(10, 10, 20, 20)], 12: [(60, 40, 20, 20), (100, 60, 30, 30)], 39: [(0, 0, 16, 16)]}

    def find(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        return finds.get(int(np.flatnonzero([f is image or np.array_equal(f, image) for f in frames])[0]), [])

    redactor = Redactor(find, carry_seconds=0.8)
    held = list(redact_stream(frames, redactor, fps=10.0))
    replayed = list(redact_stream(iter(frames), redactor, fps=10.0, replay=(f.copy() for f in frames)))
    assert len(held) == len(replayed) == 40
    assert [o.boxes for o in held] == [o.boxes for o in replayed]
    assert [o.found for o in held] == [o.found for o in replayed]
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.original, b.original)
               for a, b in zip(held, replayed, strict=True))
    assert [i for i, o in enumerate(replayed) if o.boxes] == [*range(0, 21), *range(31, 40)]  # 3±8, 12±8, 39-8


def test_a_replay_holds_no_frame_for_the_carry_window() -> None:
    """Issue 15: the carry window (9 frames at 10 fps) held decoded frames; with replay it holds only boxes. The
    frames are numpy allocations, so tracemalloc sees each one that is kept."""
    import tracemalloc

    frame_bytes = 240 * 320 * 3

    def frames(n: int) -> Any:
        for i in range(n):
            yield np.full((240, 320, 3), i % 250, np.uint8)

    redactor = Redactor(lambda image: [(10, 10, 40, 40)], carry_seconds=0.8)  # 8 frames each way at 10 fps

    def peak(replay: bool) -> int:
        tracemalloc.start()
        try:
            for out in redact_stream(frames(60), redactor, fps=10.0, replay=frames(60) if replay else None):
                del out  # a consumer that keeps nothing (as the export's encoder)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(replay=False) > 9 * frame_bytes  # the held window, as measured here: the check can see it
    assert peak(replay=True) < 4 * frame_bytes  # the frame searched, the one emitted, its redacted copy


def test_a_replay_of_another_length_is_refused() -> None:
    redactor = Redactor(lambda image: [], carry_seconds=0.2)
    with pytest.raises(StorageError, match="end at frame 9 of the 10"):
        list(redact_stream([noise(seed=i) for i in range(10)], redactor, 10.0, replay=[noise()] * 9))
    with pytest.raises(StorageError, match="run past the 10 frames"):
        list(redact_stream([noise(seed=i) for i in range(10)], redactor, 10.0, replay=[noise()] * 11))


def test_redact_frame_carries_forward_only() -> None:
    state = RedactionState(Redactor(lambda image: [(10, 10, 10, 10)] if image[0, 0, 0] == 1 else [],
                                    carry_seconds=0.2), fps=10.0)
    images = [np.full((60, 60, 3), 1 if i == 3 else 50 + i, np.uint8) for i in range(8)]
    boxes = [redact_frame(image, state)[1] for image in images]
    assert [bool(b) for b in boxes] == [False, False, False, True, True, True, False, False]


def test_check_frame_uses_only_the_check_detector() -> None:
    image = noise()
    assert check_frame(image, Redactor(lambda i: [(1, 1, 5, 5)])) == []
    assert check_frame(image, Redactor(lambda i: [], check=lambda i: [(1.0, 2.0, 3.0, 4.0)])) == [(1, 2, 3, 4)]


def white_blobs(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """A fake check detector: the bounding box of the pure white pixels, if any (a 'face')."""
    ys, xs = np.nonzero((image == 255).all(axis=2))
    if xs.size == 0:
        return []
    return [(int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))]


def test_check_frame_keeps_a_find_only_if_the_recorded_frame_shows_it_too() -> None:
    """Pixelation cannot reveal a face: what the check finds only in the redacted frame was made up by it (the
    Hamilton clip's blouse under a pixelated face), what it finds in both is a leak and refuses."""
    original = np.full((120, 160, 3), 90, np.uint8)
    made_up = original.copy()
    made_up[50:70, 60:80] = 255  # a 'face' only in the redacted frame
    redactor = Redactor(lambda i: [], check=white_blobs)
    assert check_frame(made_up, redactor, original) == []
    assert check_frame(made_up, redactor) == [(60, 50, 20, 20)]  # without the original: refused as before
    leaked = original.copy()
    leaked[52:72, 62:82] = 255
    assert check_frame(made_up, redactor, leaked) == [(60, 50, 20, 20)]  # in both (moved a little): a leak
    far = original.copy()
    far[0:10, 0:10] = 255  # a face elsewhere in the recording does not confirm this one
    assert check_frame(made_up, redactor, far) == []


def test_redact_stream_hands_each_frame_its_original() -> None:
    images = [noise(40, 40, seed=i) for i in range(5)]
    outs = list(redact_stream(images, Redactor(lambda i: [(5, 5, 10, 10)]), fps=10.0))
    assert all(out.original is image for out, image in zip(outs, images, strict=True))
    assert all(not np.array_equal(out.image, image) for out, image in zip(outs, images, strict=True))


def test_without_provided_finders_exports_cannot_blur(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_provider", None)
    with pytest.raises(redact.ModelError, match="no face detector"):
        redact.shipped_finders()


# --- the shipped finders on real photos ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Any:
    from edge.vision.engine import FaceEngine

    return FaceEngine.load("int8", 1)


@pytest.fixture(scope="module")
def finders() -> Any:
    from edge.vision import redaction_finders

    return redaction_finders.find_faces(), redaction_finders.check_faces()


@pytest.mark.parametrize("name", PHOTOS)
def test_real_faces_are_unrecognisable_after_redaction(shared_data: Path, engine: Any, finders: Any,
                                                       name: str) -> None:
    find, check = finders
    image = cv2.imread(str(shared_data / "gallery" / name))
    assert image is not None
    found = engine.detect(image)
    assert found and find(image) and check(image)
    out, _ = redact_frame(image, RedactionState(Redactor(find, check), fps=10.0))
    assert engine.detect(out) == []
    assert check(out) == []
    unknown = FacesConfig().unknown_distance
    for det in found:
        distance = float(np.linalg.norm(engine.embed_face(image, det) - engine.embed_face(out, det)))
        assert distance > unknown, (name, distance)


def test_merge_boxes_unites_overlapping_boxes_only() -> None:
    assert redact.merge_boxes([(0, 0, 10, 10), (2, 2, 10, 10), (50, 50, 5, 5)]) == [(0, 0, 12, 12), (50, 50, 5, 5)]
    # a chain merges transitively (into the union); a box overlapping less than half, or touching, stays apart
    assert redact.merge_boxes([(0, 0, 10, 10), (4, 0, 10, 10), (8, 0, 10, 10), (18, 0, 4, 4), (15, 5, 10, 10)]) == [
        (0, 0, 18, 10), (18, 0, 4, 4), (15, 5, 10, 10)]
    assert redact.merge_boxes([(0, 0, 0, 5)]) == []


def test_tiled_finder_maps_tile_finds_to_the_frame() -> None:
    from edge.vision.detector import Detection
    from edge.vision.redaction_finders import TiledFinder

    seen: list[tuple[int, int]] = []

    def detect(image: np.ndarray) -> list[Detection]:
        seen.append(image.shape[:2])
        # a face at (5, 5)-(15, 15) of whatever it is shown, found only in the tiles
        return [Detection(5.2, 5.0, 15.0, 14.6, 0.9, np.zeros((6, 2), np.float32))] if image.shape[0] < 720 else []

    finder = TiledFinder(detect, (0.5,), overlap=0.25, tile_every=2)
    boxes = finder(np.zeros((720, 1280, 3), np.uint8))
    assert seen[0] == (720, 1280) and set(seen[1:]) == {(360, 360)}
    starts = tiles(1280, 720, 360, 0.25)
    assert boxes == [(x + 5, y + 5, 10, 10) for x, y, _, _ in starts]
    seen.clear()
    assert finder(np.zeros((720, 1280, 3), np.uint8)) == [] and seen == [(720, 1280)]  # 2nd call: frame only
