"""Accuracy evaluation: LFW n-fold verification and detector recall / false positives on photos."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.errors import EdgeError
from edge.vision.detector import Detection, FaceDetector

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass(frozen=True)
class Pair:
    a: str  # "Name/Name_0001.jpg" relative to DIR/images
    b: str
    same: bool
    fold: int


def lfw_pairs_file(data: Path) -> Path:
    """DIR/pairs.txt of an LFW folder, or an EdgeError saying what is missing (checked before models load)."""
    layout = "an LFW folder holds pairs.txt and images/NAME/NAME_0001.jpg"
    if not data.is_dir():
        raise EdgeError(f"eval lfw: --data {data}: no such folder ({layout})")
    path = data / "pairs.txt"
    if not path.is_file():
        raise EdgeError(f"eval lfw: {path} is missing ({layout})")
    return path


def read_pairs(path: Path) -> tuple[list[Pair], int]:
    """LFW pairs.txt: header "<folds>\t<n>", then per fold n same lines and n different lines."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    try:
        folds, per = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError):
        raise EdgeError(f"{path}: line 1 should be '<folds> <pairs per fold>' as in LFW's pairs.txt") from None
    pairs: list[Pair] = []
    rows = lines[1:]
    if folds < 1 or per < 1 or len(rows) < folds * 2 * per:
        raise EdgeError(f"{path}: expected {folds * 2 * per} pairs, found {len(rows)}")
    if any(len(row) not in (3, 4) for row in rows[: folds * 2 * per]):
        raise EdgeError(f"{path}: a pair line is 'NAME I J' (same person) or 'NAME I OTHER J' (different people)")

    def img(name: str, i: str) -> str:
        return f"{name}/{name}_{int(i):04d}.jpg"

    for k, row in enumerate(rows[: folds * 2 * per]):
        fold = k // (2 * per)
        if len(row) == 3:
            pairs.append(Pair(img(row[0], row[1]), img(row[0], row[2]), True, fold))
        else:
            pairs.append(Pair(img(row[0], row[1]), img(row[2], row[3]), False, fold))
    return pairs, folds


def _best_threshold(dist: npt.NDArray[np.float64], same: npt.NDArray[np.bool_]) -> float:
    """The distance threshold (accept if dist < t) with the highest accuracy on these pairs."""
    cand = np.unique(dist)
    mids = np.concatenate([[cand[0] - 1e-6], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1e-6]])
    acc = [np.mean((dist < t) == same) for t in mids]
    return float(mids[int(np.argmax(acc))])


def tar_at_far(dist: npt.NDArray[np.float64], same: npt.NDArray[np.bool_], far: float) -> float:
    neg = np.sort(dist[~same])
    allowed = int(np.floor(far * len(neg)))  # false accepts allowed
    t = neg[allowed] if allowed < len(neg) else np.inf  # accept strictly below the (allowed+1)-th impostor
    return float(np.mean(dist[same] < t))


@dataclass
class LfwResult:
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    thresholds: list[float]
    tar_at_far_1e3: float
    detector_hit_rate: float
    images: int
    images_without_detection: int
    pairs: int
    model: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def nfold(
    dist: npt.NDArray[np.float64], same: npt.NDArray[np.bool_], fold: npt.NDArray[np.int_], folds: int
) -> tuple[list[float], list[float]]:
    accs, ths = [], []
    for k in range(folds):
        test = fold == k
        t = _best_threshold(dist[~test], same[~test])
        ths.append(t)
        accs.append(float(np.mean((dist[test] < t) == same[test])))
    return accs, ths


def pick_central(dets: list[Detection], w: int, h: int) -> Detection | None:
    """For single-subject photos (LFW): the detection nearest the image centre."""
    if not dets:
        return None
    return min(dets, key=lambda d: ((d.x0 + d.x1) / 2 - w / 2) ** 2 + ((d.y0 + d.y1) / 2 - h / 2) ** 2)


def evaluate_lfw(
    data: Path,
    detector: FaceDetector,
    embed_face: Callable[[np.ndarray, Detection], np.ndarray],
    limit_pairs: int | None = None,
    model: str = "",
) -> LfwResult:
    """Embed every referenced image once, then n-fold accuracy with thresholds from the other folds.

    An image in which the detector finds no face at its normal threshold is retried at a low one
    and, failing that, given a fixed centre box (LFW photos are centred); such images are counted
    in `images_without_detection` and reduce `detector_hit_rate`.
    """
    pairs, folds = read_pairs(lfw_pairs_file(data))
    if limit_pairs is not None:
        pairs = _balanced_subset(pairs, folds, limit_pairs)
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    emb: dict[str, np.ndarray] = {}
    misses = 0
    low = FaceDetector(detector.model, score_threshold=0.2, nms_iou=detector.nms_iou)
    for name in names:
        img = cv2.imread(str(data / "images" / name), cv2.IMREAD_COLOR)
        if img is None:
            raise EdgeError(f"{data / 'images' / name}: missing or not a readable image (named in pairs.txt)")
        h, w = img.shape[:2]
        det = pick_central(detector.detect(img), w, h)
        if det is None:
            misses += 1
            det = pick_central(low.detect(img), w, h) or _centre_detection(w, h)
        emb[name] = embed_face(img, det)
    dist = np.array([np.linalg.norm(emb[p.a] - emb[p.b]) for p in pairs])
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    used_folds = sorted(set(fold.tolist()))
    fold = np.searchsorted(used_folds, fold)
    accs, ths = nfold(dist, same, fold, len(used_folds))
    return LfwResult(
        accuracy_mean=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        fold_accuracies=accs,
        thresholds=ths,
        tar_at_far_1e3=tar_at_far(dist, same, 1e-3),
        detector_hit_rate=1.0 - misses / len(names),
        images=len(names),
        images_without_detection=misses,
        pairs=len(pairs),
        model=model,
    )


def _balanced_subset(pairs: list[Pair], folds: int, n: int) -> list[Pair]:
    """The first n/(2*folds) same and different pairs of every fold (deterministic)."""
    per = max(1, n // (2 * folds))
    out: list[Pair] = []
    for k in range(folds):
        for same in (True, False):
            out.extend([p for p in pairs if p.fold == k and p.same == same][:per])
    return out


def _centre_detection(w: int, h: int) -> Detection:
    s = min(w, h) * 0.45
    cx, cy = w / 2, h / 2
    kps = np.array(
        [
            [cx - 0.3 * s, cy - 0.15 * s],
            [cx + 0.3 * s, cy - 0.15 * s],
            [cx, cy + 0.1 * s],
            [cx, cy + 0.35 * s],
            [cx - 0.6 * s, cy],
            [cx + 0.6 * s, cy],
        ],
        np.float32,
    )
    return Detection(cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2, 0.0, kps)


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def photo_folder(root: Path, option: str) -> list[Path]:
    """The photos under `root` for an eval option, or an EdgeError: a missing or empty folder would measure 0/0."""
    if not root.is_dir():
        raise EdgeError(f"{option} {root}: no such folder")
    photos = list_images(root)
    if not photos:
        raise EdgeError(f"{option} {root}: no photos in it ({', '.join(sorted(IMAGE_SUFFIXES))}, searched recursively)")
    return photos


@dataclass
class DetectResult:
    face_images: int
    face_images_detected: int
    recall: float
    negative_images: int
    false_positives: int
    false_positives_per_100: float
    negative_images_with_fp: int
    unreadable: int = 0  # files with an image suffix that would not decode; left out of every count above

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate_detect(detector: FaceDetector, faces: Iterable[Path], negatives: Iterable[Path]) -> DetectResult:
    """Recall = share of face photos with at least one detection; FP = every detection on a no-face photo."""
    hit, n_faces, unreadable = 0, 0, 0
    for p in faces:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("%s: not a readable image; left out", p)
            unreadable += 1
            continue
        n_faces += 1
        hit += bool(detector.detect(img))
    fps, fp_imgs, n_neg = 0, 0, 0
    for p in negatives:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("%s: not a readable image; left out", p)
            unreadable += 1
            continue
        n_neg += 1
        n = len(detector.detect(img))
        fps += n
        fp_imgs += n > 0
    if not n_faces or not n_neg:
        raise EdgeError(
            f"eval detect: no readable {'face' if not n_faces else 'no-face'} photos ({unreadable} unreadable): "
            "recall and false positives need both"
        )
    return DetectResult(n_faces, hit, hit / n_faces, n_neg, fps, 100.0 * fps / n_neg, fp_imgs, unreadable)
