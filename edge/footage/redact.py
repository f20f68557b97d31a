"""Face redaction for exports: injected face finders, pure box logic (tiles, margins, carrying) and pixelation.

The footage package never imports the vision package: the face finders are plain callables handed in by the
shell (edge/cli.py provides the shipped ones from edge.vision.redaction_finders via provide_finders()).

API for callers (the export, `doorbell-edge eval redaction`, bench/):

    finders = shipped_finders()                       # ExportFinders(find, check, names) from the shell
    redactor = Redactor(finders.find, finders.check)  # optional keep=(x, y, w, h): pixelate all else
    for out in redact_stream(frames, redactor, fps):  # lazily, one frame in, one frame out, same order
                                                      # (replay=the same frames again: none is held; export)
        out.image, out.boxes                          # the redacted frame, the (grown) boxes pixelated in it
    check_frame(image, redactor, original) -> list[Box]  # faces the independent check still finds (and sees
                                                      # in the recorded frame: not made up by the pixelation)

    state = RedactionState(redactor, fps); redact_frame(frame, state) -> (image, boxes)
                                                      # one frame, boxes carried forward only (no look-ahead)
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.errors import ModelError, RequestError, StorageError
from edge.types import Image

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, w, h in image pixels
FindFaces = Callable[[Image], Sequence[Box]]  # BGR frame -> face boxes; used for choosing blur and for checking

MARGIN = 0.3  # grow each box by this share of its size on every side: hair, ears, chin and a detector's jitter
BLOCKS = 3  # a face becomes at most 3x3 flat tiles: nothing left to detect or recognise
CARRY_SECONDS = 0.8  # a face found at time t is blurred from t - 0.8 s to t + 0.8 s (missed frames around a hit)
KEEP_BLOCKS = 40  # strict mode: outside the kept region, the frame's longer side is at most 40 flat tiles
REDACT_SCORE = 0.25  # detector score for choosing blur boxes: far below recognition's, redaction favours recall


class FaceLeak(RequestError):
    """After redaction the check detector still found a face: the export is refused, nothing leaves."""

    def __init__(self, message: str, *, clip: str | None, frame: int, kind: str, boxes: Sequence[Box]) -> None:
        super().__init__(message)
        self.clip = clip
        self.frame = frame
        self.kind = kind
        self.boxes = [tuple(int(v) for v in b) for b in boxes]


@dataclass(frozen=True)
class ExportFinders:
    """What an export needs from a face detector: `find` chooses the blur boxes, `check` is an independent
    detector that scans every redacted frame; `names` describe both (for the audit log)."""

    find: FindFaces
    check: FindFaces | None
    names: tuple[str, str] = ("injected", "none")


_provider: Callable[[], ExportFinders] | None = None


def provide_finders(factory: Callable[[], ExportFinders]) -> None:
    """Called by the shell at start: how to build the shipped finders (loaded only when an export needs them)."""
    global _provider
    _provider = factory


def shipped_finders() -> ExportFinders:
    """The finders the shell provided; ModelError when none were (exports then refuse to go ahead)."""
    if _provider is None:
        raise ModelError("no face detector was provided to the footage export (see edge.footage.redact)")
    return _provider()


@dataclass(frozen=True)
class Redactor:
    """How one export redacts: the finder choosing boxes, the independent check, margins, carrying, strict mode."""

    find: FindFaces
    check: FindFaces | None = None
    margin: float = MARGIN
    carry_seconds: float = CARRY_SECONDS
    keep: Box | None = None  # the owner's kept region: everything outside it is pixelated
    names: tuple[str, str] = ("injected", "none")

    @classmethod
    def of(cls, finders: ExportFinders, keep: Box | None = None) -> Redactor:
        return cls(finders.find, finders.check, keep=keep, names=finders.names)

    def carry_frames(self, fps: float) -> int:
        return max(0, round(self.carry_seconds * fps)) if fps > 0 else 0


# --- pure box logic ----------------------------------------------------------------------------------------


def parse_region(text: str) -> Box:
    """`x,y,w,h` in pixels of the recorded frame (the owner's --keep-region)."""
    parts = re.split(r"[,\s]+", text.strip())
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError as exc:
        raise RequestError(f"--keep-region {text!r}: expected x,y,w,h in pixels, e.g. 400,100,480,560") from exc
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise RequestError(f"--keep-region {text!r}: x and y must be >= 0, width and height > 0")
    return x, y, w, h


def tiles(width: int, height: int, size: int, overlap: float = 0.25) -> list[Box]:
    """Square tiles of `size` covering a width x height frame, neighbours overlapping by at least `overlap` of a
    tile (so a face up to overlap*size wide lies whole inside one tile); the last row and column end at the
    frame's edge. A frame no larger than one tile is one tile: itself."""
    if size <= 0:
        raise ValueError("tile size must be positive")

    def starts(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        step = max(1, int(size * (1.0 - overlap)))
        n = -(-(extent - size) // step) + 1  # ceil
        return [round(i * (extent - size) / (n - 1)) for i in range(n)]

    tw, th = min(size, width), min(size, height)
    return [(x, y, tw, th) for y in starts(height) for x in starts(width)]


def grow(box: Box, margin: float, width: int, height: int) -> Box | None:
    """The box grown by `margin` of its size on every side, clipped to the frame (None when nothing is left)."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return None
    mx, my = int(np.ceil(w * margin)), int(np.ceil(h * margin))
    x0, y0 = max(0, int(x) - mx), max(0, int(y) - my)
    x1, y1 = min(width, int(x + w) + mx), min(height, int(y + h) + my)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def merge_boxes(boxes: Iterable[Box], overlap: float = 0.5) -> list[Box]:
    """Boxes that overlap by more than `overlap` of the smaller one's area replaced by their union, until none
    do: one face found by the frame and by tiles, or in several carried frames, is pixelated once (covering all
    of them), so the cost of a frame does not grow with the carry window."""
    out = [b for b in boxes if b[2] > 0 and b[3] > 0]
    changed = True
    while changed:
        changed = False
        kept: list[list[int]] = []
        for x, y, w, h in out:
            x1, y1 = x + w, y + h
            for k in kept:
                iw = min(x1, k[2]) - max(x, k[0])
                ih = min(y1, k[3]) - max(y, k[1])
                if iw > 0 and ih > 0 and iw * ih > overlap * min(w * h, (k[2] - k[0]) * (k[3] - k[1])):
                    k[0], k[1], k[2], k[3] = min(x, k[0]), min(y, k[1]), max(x1, k[2]), max(y1, k[3])
                    changed = True
                    break
            else:
                kept.append([x, y, x1, y1])
        out = [(k[0], k[1], k[2] - k[0], k[3] - k[1]) for k in kept]
    return out


def _pixelate(region: Image, blocks_x: int, blocks_y: int) -> Image:
    h, w = region.shape[:2]
    tiny = cv2.resize(region, (max(1, min(blocks_x, w)), max(1, min(blocks_y, h))), interpolation=cv2.INTER_AREA)
    return cv2.resize(tiny, (w, h), interpolation=cv2.INTER_NEAREST)


def pixelate_boxes(image: Image, boxes: Sequence[Box]) -> Image:
    """A copy of `image` with every box (already grown) reduced to BLOCKS x BLOCKS averages and spread back
    smoothly (bilinear), so not even tile edges carry shape: irreversible, nothing of a face's layout survives."""
    out = image.copy()
    height, width = out.shape[:2]
    for x, y, w, h in boxes:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
        if x1 <= x0 or y1 <= y0:
            continue
        region = out[y0:y1, x0:x1]
        tiny = cv2.resize(region, (min(BLOCKS, x1 - x0), min(BLOCKS, y1 - y0)), interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.resize(tiny, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out


def blur_boxes(image: Image, boxes: Sequence[Box], margin: float = MARGIN) -> Image:
    """A copy of `image` with every box, grown by `margin`, pixelated (see pixelate_boxes)."""
    height, width = image.shape[:2]
    grown = [g for g in (grow(b, margin, width, height) for b in boxes) if g is not None]
    return pixelate_boxes(image, grown)


def pixelate_outside(image: Image, keep: Box) -> Image:
    """A copy of `image` pixelated everywhere outside the kept region (flat tiles of about 1/KEEP_BLOCKS of the
    longer side: no face of any size survives there), the region itself untouched."""
    height, width = image.shape[:2]
    block = max(8, -(-max(height, width) // KEEP_BLOCKS))
    out = _pixelate(image, -(-width // block), -(-height // block))
    x, y, w, h = keep
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out


# --- frames in, frames out ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedactedFrame:
    image: Image
    boxes: tuple[Box, ...]  # grown boxes pixelated in this frame (its own finds and those carried to it)
    found: tuple[Box, ...]  # what the finder found in this very frame (before margins)
    original: Image | None = None  # the frame as recorded (check_frame verifies the check's finds on it)


@dataclass
class RedactionState:
    """Boxes found in recent frames, carried forward to the frames after them (redact_frame)."""

    redactor: Redactor
    fps: float = 10.0
    recent: deque[tuple[Box, ...]] = field(default_factory=deque)


def _apply(image: Image, redactor: Redactor, boxes: Iterable[Box]) -> tuple[Image, tuple[Box, ...]]:
    height, width = image.shape[:2]
    grown = tuple(merge_boxes(g for g in (grow(b, redactor.margin, width, height) for b in boxes) if g))
    out = pixelate_boxes(image, grown)
    if redactor.keep is not None:
        out = pixelate_outside(out, redactor.keep)
    return out, grown


def redact_frame(frame: Image, state: RedactionState) -> tuple[Image, tuple[Box, ...]]:
    """One frame redacted with the boxes found in it and those found in the previous carry_frames frames."""
    found = tuple(state.redactor.find(frame))
    state.recent.append(found)
    while len(state.recent) > state.redactor.carry_frames(state.fps) + 1:
        state.recent.popleft()
    return _apply(frame, state.redactor, (b for boxes in state.recent for b in boxes))


def redact_stream(
    frames: Iterable[Image], redactor: Redactor, fps: float = 10.0, replay: Iterable[Image] | None = None
) -> Iterator[RedactedFrame]:
    """Every frame, in order, pixelated where the finder found a face in it or in any frame up to
    carry_frames(fps) before or after it: a face is blurred for a while before it is first found (small, turning,
    entering) and after it is last found.

    Without `replay`, one pass: the frames not yet emitted are held, at most carry_frames + 1 at a time. With
    `replay` (the same frames again, in the same order: the clip decoded a second time), two passes and no frame
    held: the finder runs over all of `frames` first, keeping only its boxes, then each frame of `replay` is
    emitted with them (issue 15: the carry window was nine 1280x720 frames, 25 MB of an export's memory; the boxes
    are about 230 bytes a frame with a face, 0.7 MB for 5 minutes at 10 fps). A face the check still finds is
    then refused only after the whole first pass. `replay` must yield exactly as many frames as `frames`
    (StorageError otherwise)."""
    carry = redactor.carry_frames(fps)
    window: deque[tuple[Box, ...]] = deque()  # finds of the frames from (next to emit - carry) to the newest
    if replay is not None:
        for image in frames:
            window.append(tuple(redactor.find(image)))
            del image  # not kept while the next frame decodes
        count = len(window)
        emitted = 0
        for image in replay:
            if emitted == count:
                raise StorageError(f"redaction: the replayed frames run past the {count} frames searched for faces")
            yield _emit_one(image, window, redactor, emitted, count, carry)
            del image
            emitted += 1
        if emitted != count:
            raise StorageError(f"redaction: the replayed frames end at frame {emitted} of the {count} searched")
        return

    pending: deque[Image] = deque()  # frames not yet emitted
    emitted = 0
    count = 0
    for image in frames:
        window.append(tuple(redactor.find(image)))
        pending.append(image)
        count += 1
        if len(pending) > carry:
            # the oldest pending frame now has every find from carry frames before it to carry frames after it
            yield _emit_one(pending.popleft(), window, redactor, emitted, count, carry)
            emitted += 1
    while pending:
        yield _emit_one(pending.popleft(), window, redactor, emitted, count, carry)
        emitted += 1


def _emit_one(
    image: Image,
    window: deque[tuple[Box, ...]],
    redactor: Redactor,
    index: int,
    count: int,
    carry: int,
) -> RedactedFrame:
    """Emit frame `index` (`image`, the oldest not yet emitted) with the finds of frames index-carry ..
    index+carry; window holds the finds of frames (count - len(window)) .. count-1."""
    first = count - len(window)
    lo, hi = index - carry, index + carry
    boxes = [b for i, finds in enumerate(window, start=first) if lo <= i <= hi for b in finds]
    out, grown = _apply(image, redactor, boxes)
    found = window[index - first]
    while window and count - len(window) < index + 1 - carry:  # finds no later frame can use any more
        window.popleft()
    return RedactedFrame(out, grown, found, image)


def check_frame(image: Image, redactor: Redactor, original: Image | None = None) -> list[Box]:
    """The faces the independent check detector still finds in a redacted frame (empty: nothing to refuse).

    With the `original` (the frame as recorded), each find is kept only when the check also finds a face at
    that place in the original (run on the same close-up: the box and one box-size around it): pixelation
    removes information and cannot reveal a face, but the edge of a pixelated patch next to a pattern can make
    one up (measured: a blouse under a blurred face scored 0.53 as recorded and 0.71 redacted in the Hamilton
    clip, and refused the export). A face the check sees in both is a leak."""
    if redactor.check is None:
        return []
    found: list[Box] = [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in redactor.check(image)]
    if original is None or not found:
        return found
    return [b for b in found if _seen_in(original, b, redactor.check)]


def _seen_in(original: Image, box: Box, check: FindFaces) -> bool:
    """Whether `check` finds a face overlapping `box` in the close-up of `original` around it."""
    height, width = original.shape[:2]
    x, y, w, h = box
    x0, y0, x1, y1 = max(0, x - w), max(0, y - h), min(width, x + 2 * w), min(height, y + 2 * h)
    if x1 <= x0 or y1 <= y0:
        return True  # nothing to look at: keep the find (refusing is the safe side)
    cx, cy = x + w / 2, y + h / 2
    for bx, by, bw, bh in check(original[y0:y1, x0:x1]):
        bx, by = bx + x0, by + y0
        if (bx <= cx <= bx + bw and by <= cy <= by + bh) or (x <= bx + bw / 2 <= x + w and y <= by + bh / 2 <= y + h):
            return True
    return False
