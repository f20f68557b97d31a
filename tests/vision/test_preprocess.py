"""The in-place input paths and the cheaper decode give what the straightforward versions give.

Each fast path (detector input written into the interpreter's tensor, int8 logit threshold, NMS over
an overlap matrix, closed-form similarity, mesh input through a pixel table, embedder input by XOR)
is compared with a plain reference implementation kept here, on real photos and synthetic data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.vision import runtime
from edge.vision.align import CHIP, Aligner, _Warper, load_template, similarity
from edge.vision.detector import INPUT, Detection, FaceDetector, _weighted_nms, decode
from edge.vision.embedder import Embedder
from edge.vision.eval import list_images
from edge.vision.runtime import PixelMap
from tests.vision.conftest import MODELS
from tools.modelbuild.mesh_inputs import RecordingMesh

# ---- reference implementations (the straightforward forms the fast paths replace) ----


def ref_letterbox(image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    h, w = image_bgr.shape[:2]
    scale = INPUT / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    src = image_bgr
    while src.shape[1] * 0.5 >= nw and src.shape[0] * 0.5 >= nh:
        src = cv2.pyrDown(src)
    small = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_LINEAR)
    px, py = (INPUT - nw) // 2, (INPUT - nh) // 2
    canvas = np.zeros((INPUT, INPUT, 3), np.uint8)
    canvas[py : py + nh, px : px + nw] = small
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), scale, float(px), float(py)


_GRID = 48
_ANCHORS = np.stack(np.meshgrid((np.arange(_GRID) + 0.5) / _GRID, (np.arange(_GRID) + 0.5) / _GRID), -1).reshape(-1, 2)


def ref_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, threshold: float) -> list[Detection]:
    order = np.argsort(-scores, kind="stable")
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    left = np.ones(len(boxes), bool)
    out = []
    for best in range(len(boxes)):
        if not left[best]:
            continue
        b = boxes[best]
        ix = np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None)
        inter = ix * iy
        union = area[best] + area - inter
        group = left & (inter > threshold * np.where(union > 0, union, np.inf))
        group[best] = True
        left &= ~group
        w = scores[group] / scores[group].sum()
        box = (boxes[group] * w[:, None]).sum(0)
        kp = (kps[group] * w[:, None, None]).sum(0)
        out.append(Detection(*map(float, box), float(scores[best]), kp.astype(np.float32)))
    return out


def ref_detect(det: FaceDetector, image_bgr: np.ndarray) -> tuple[np.ndarray, list[Detection]]:
    """The input tensor and detections the unoptimised pipeline gives (letterbox, LUT, run, decode all)."""
    canvas, scale, px, py = ref_letterbox(image_bgr)
    tensor = cv2.LUT(canvas, det.model.pixel_lut(2.0 / 255.0, -1.0))
    regress, logits = det.model.run(tensor[None], raw=True)
    rq, lq = det.model.output_quantization(0), det.model.output_quantization(1)
    if lq is not None:  # float32 logits, float64 boxes, as the detector always dequantized them
        logits = (logits.astype(np.float32) - lq[1]) * np.float32(lq[0])
    keep = np.flatnonzero(logits[0, :, 0] >= np.log(det.score_threshold / (1.0 - det.score_threshold)))
    if keep.size == 0:
        return tensor, []
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, keep, 0].astype(np.float64), -100.0, 100.0)))
    raw = regress[0, keep].astype(np.float64)
    if rq is not None:
        raw = (raw - rq[1]) * rq[0]
    raw /= INPUT
    anchors = _ANCHORS[keep]
    cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    boxes = (boxes * INPUT - np.array([px, py, px, py])) / scale
    kps = (kps * INPUT - np.array([px, py])) / scale
    return tensor, ref_nms(boxes, kps, scores, det.nms_iou)


def ref_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama with an SVD and the reflection fix."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var = (s**2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ fix) / var) if var > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - scale * rot @ ms
    return m


# ---- fixtures ----


def _frames(data: Path) -> list[np.ndarray]:
    """Photos of many sizes (portrait, landscape, tiny, 32-bit PNG), a 640x480 crop, and no-face photos."""
    paths = list_images(data / "gallery")[::3] + list_images(data / "negatives")[::20]
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    imgs.append(np.ascontiguousarray(cv2.resize(imgs[0], (640, 480))))
    imgs.append(np.ascontiguousarray(imgs[0][:37, :191]))  # odd, tiny: no halving, padding on all sides
    return imgs


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[np.ndarray]:
    return _frames(shared_data)


@pytest.fixture(scope="module", params=["int8", "float"])
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    return FaceDetector(runtime.load(MODELS / f"face_detector_{request.param}.tflite", 2))


def _same(a: list[Detection], b: list[Detection]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert np.allclose(x.box, y.box, rtol=0, atol=1e-9), (x.box, y.box)
        assert abs(x.score - y.score) < 1e-12
        assert np.allclose(x.keypoints, y.keypoints, rtol=0, atol=1e-4)


# ---- detector ----


def test_detector_feeds_the_letterboxed_tensor_and_decodes_as_the_reference(
    frames: list[np.ndarray], detector: FaceDetector
) -> None:
    found = 0
    for img in frames + frames[:2]:  # repeated sizes reuse their buffers
        got = detector.detect(img)
        tensor, want = ref_detect(detector, img)
        assert np.array_equal(detector.model.input()[0], tensor)
        _same(got, want)
        found += len(got)
    assert found >= 5  # the comparison covered real faces, not only empty frames


@pytest.mark.parametrize("precision", ["int8", "float"])
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8, 0.999])
def test_logit_threshold_keeps_the_same_candidates(frames: list[np.ndarray], threshold: float, precision: str) -> None:
    det = FaceDetector(runtime.load(MODELS / f"face_detector_{precision}.tflite", 2), score_threshold=threshold)
    for img in frames[:6]:
        _same(det.detect(img), ref_detect(det, img)[1])


def test_weighted_nms_matches_reference_on_synthetic_candidates() -> None:
    rng = np.random.default_rng(7)
    for n in [1, 2, 3, 5, 12, 40]:
        for _ in range(20):
            xy = rng.uniform(0, 100, (n, 2))
            if n > 2:
                xy[: n // 2] = xy[0] + rng.normal(0, 3, (n // 2, 2))  # a cluster that must be blended
            wh = rng.uniform(10, 40, (n, 2))
            boxes = np.concatenate([xy, xy + wh], 1)
            kps = rng.uniform(0, 140, (n, 6, 2))
            scores = rng.uniform(0.5, 1.0, n)
            scores[-1] = scores[0]  # a tie: order must stay stable
            _same(_weighted_nms(boxes, kps, scores, 0.3), ref_nms(boxes, kps, scores, 0.3))


@pytest.mark.parametrize("positives", [1, 2, 3, 4, 5, 30])
def test_decode_of_all_anchors_matches_reference(positives: int) -> None:
    """Few candidates take the plain-Python path, more the numpy one: both give the reference result."""
    rng = np.random.default_rng(positives)
    for trial in range(10):
        logits = rng.normal(-6, 1, 2304).astype(np.float32)
        start = int(rng.integers(0, 2304 - 100))
        pool = [0, 1, 2, 3, 48, 49, 50, 51] if positives <= 5 else np.arange(100)
        hits = start + np.sort(rng.choice(pool, positives, replace=False))
        logits[hits] = rng.uniform(0.01, 4, positives)  # neighbouring anchors: overlapping boxes, blended
        regress = rng.normal(0, 3, (2304, 16)).astype(np.float32)
        regress[:, 2:4] = np.abs(regress[:, 2:4]) + (8 if trial % 2 else 30)
        got = decode(regress, logits, 0.3, 0.0, 24.0, 0.5, 0.3)
        keep = np.flatnonzero(logits >= 0.0)
        assert np.array_equal(keep, hits)
        scores = 1.0 / (1.0 + np.exp(-logits[keep].astype(np.float64)))
        raw = regress[keep].astype(np.float64) / INPUT
        a = _ANCHORS[keep]
        cx, cy, w, h = raw[:, 0] + a[:, 0], raw[:, 1] + a[:, 1], raw[:, 2], raw[:, 3]
        boxes = (np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * INPUT - [0, 24, 0, 24]) / 0.3
        kps = ((raw[:, 4:].reshape(-1, 6, 2) + a[:, None]) * INPUT - [0, 24]) / 0.3
        want = ref_nms(boxes, kps, scores, 0.3)
        assert positives < 2 or trial % 2 or len(want) < positives  # big boxes: some were blended
        _same(got, want)


# ---- alignment ----


def test_closed_form_similarity_equals_umeyama_svd() -> None:
    rng = np.random.default_rng(11)
    template = load_template(MODELS / "face_chip_template.json")
    assert template is not None
    for trial in range(200):
        n = [5, 468, 2, 3][trial % 4]
        src = rng.uniform(-300, 900, (n, 2))
        if trial % 4 == 1:  # the real case: a rotated, scaled, noisy template
            ang, k = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5)
            rot = k * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            src = template @ rot.T + rng.uniform(-500, 500, 2) + rng.normal(0, 2, (n, 2))
            dst = template
        elif trial % 5 == 0:
            dst = src[:, ::-1] * [1.0, -2.0]  # a mirrored target: best proper rotation, no reflection
        else:
            dst = rng.uniform(0, 150, (n, 2))
        got, want = similarity(src, dst), ref_similarity(src, dst)
        assert np.allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(want).max()))), (got, want)
        assert got[0, 0] == pytest.approx(got[1, 1]) and got[0, 1] == pytest.approx(-got[1, 0])
    same, dst = np.ones((5, 2)), rng.uniform(0, 9, (5, 2))  # degenerate: every source point the same
    assert np.allclose(similarity(same, dst), ref_similarity(same, dst))


def _faces(frames: list[np.ndarray]) -> list[tuple[np.ndarray, Detection]]:
    det = FaceDetector(runtime.load(MODELS / "face_detector_int8.tflite", 2))
    faces = [(img, d) for img in frames for d in det.detect(img)]
    assert len(faces) >= 5
    return faces


def _int8_input_meshes() -> list[str]:
    # the detector's int8 model takes the same 1x192x192x3 input as the mesh, so it stands in for an
    # int8 mesh (only the input path is compared); the shipped int8 mesh too, where present
    names = ["face_mesh.tflite", "face_detector_int8.tflite"]
    return names + [n for n in ["face_mesh_int8.tflite"] if (MODELS / n).is_file()]


@pytest.mark.parametrize("mesh_file", _int8_input_meshes())
def test_mesh_input_through_pixel_table_is_the_reference_tensor(frames: list[np.ndarray], mesh_file: str) -> None:
    mesh = runtime.load(MODELS / mesh_file, 2)
    fast = Aligner(mesh)
    stand_in = RecordingMesh(runtime.load(MODELS / mesh_file, 2))
    reference = Aligner(stand_in)  # type: ignore[arg-type]
    assert (mesh.input_quantization() is None) == (mesh_file == "face_mesh.tflite")
    for img, d in _faces(frames):
        pts = fast.landmarks(img, d)
        want = reference.landmarks(img, d)
        fed = mesh.input()
        assert fed.dtype == mesh.input_dtype
        assert np.array_equal(fed, mesh.quantize_input(stand_in.inputs[-1]))  # the float tensor, quantized as run()
        assert np.array_equal(fast.mesh_input(img, d), stand_in.inputs[-1])
        assert np.array_equal(pts, want)


def _affine(angle: float, scale: float, cx: float, cy: float, size: int) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, size / 2 - (c * cx - s * cy)], [s, c, size / 2 - (s * cx + c * cy)]])


def test_warper_gives_the_pixels_of_warp_affine(frames: list[np.ndarray]) -> None:
    """4-channel region path and 3-channel fallback alike, frames of one size in turn (the kept buffer
    holds the previous frame outside the fresh region), crops partly or wholly outside the image."""
    rng = np.random.default_rng(2)
    warp = _Warper()
    base = [np.ascontiguousarray(cv2.resize(f, (640, 480))) for f in frames[:4]] + frames[4:8]
    paths = set()
    for trial in range(120):
        img = base[trial % len(base)]
        h, w = img.shape[:2]
        size = [192, 150, 37][trial % 3]
        scale = float(np.exp(rng.uniform(np.log(0.05), np.log(3.0))))
        cx, cy = rng.uniform(-0.3 * w, 1.3 * w), rng.uniform(-0.3 * h, 1.3 * h)
        m = _affine(rng.uniform(-np.pi, np.pi), scale, cx, cy, size)
        want = cv2.cvtColor(cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        dst = np.empty((size, size, 3), np.uint8)
        fresh = trial % 5 == 0
        if fresh:  # no kept buffer: it is allocated only when the 4-channel path runs
            warp._bgra = np.empty((0, 0, 4), np.uint8)
        got = warp(img, m, size, dst if trial % 2 else None)
        assert np.array_equal(got, want), (trial, scale, cx, cy)
        assert got is dst or not trial % 2
        if fresh:
            paths.add(warp._bgra.shape[:2] == (h, w))
    assert paths == {True, False}  # both paths were compared


def test_chip_is_the_reference_warp(frames: list[np.ndarray]) -> None:
    aligner = Aligner(runtime.load(MODELS / "face_mesh.tflite", 2), load_template(MODELS / "face_chip_template.json"))
    for img, d in _faces(frames):
        m = ref_similarity(aligner.landmarks(img, d), aligner.template)  # type: ignore[arg-type]
        want = cv2.cvtColor(cv2.warpAffine(img, m, (CHIP, CHIP), flags=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        got = aligner.chip(img, d)
        assert got.shape == (CHIP, CHIP, 3) and got.dtype == np.uint8
        assert np.array_equal(got, want)


# ---- embedder and pixel tables ----


@pytest.mark.parametrize("precision", ["int8", "float"])
def test_embed_equals_run_on_table_mapped_chip(frames: list[np.ndarray], precision: str) -> None:
    model = runtime.load(MODELS / f"face_embedder_{precision}.tflite", 2)
    emb = Embedder(model)
    assert emb._pixels.xor == (precision == "int8")
    aligner = Aligner(runtime.load(MODELS / "face_mesh.tflite", 2))
    for img, d in _faces(frames)[:4]:
        chip = aligner.chip(img, d)
        got = emb.embed(chip)
        (want,) = model.run(cv2.LUT(chip, model.pixel_lut(1.0, 0.0))[None])
        assert got.dtype == np.float32 and got.shape == (128,)
        assert np.array_equal(got, want[0])


def _tables() -> dict[str, Any]:
    det = runtime.load(MODELS / "face_detector_int8.tflite", 1)
    emb = runtime.load(MODELS / "face_embedder_int8.tflite", 1)
    unit = np.arange(256, dtype=np.uint8).astype(np.float32) * (1.0 / 255.0)
    return {
        "detector int8 (LUT)": det.pixel_lut(2.0 / 255.0, -1.0),
        "embedder int8 (xor)": emb.pixel_lut(1.0, 0.0),
        "float gain (multiply)": unit,
        "float affine (LUT)": (np.arange(256) * (2.0 / 255.0) - 1.0).astype(np.float32),
        "int8 quantized unit (LUT)": det.quantize_input(unit),
    }


@pytest.mark.parametrize("name", list(_tables()))
def test_pixel_map_equals_table_lookup(name: str) -> None:
    lut = _tables()[name]
    pm = PixelMap(lut)
    assert pm.xor == ("xor" in name) and (pm.gain is not None) == ("multiply" in name)
    rng = np.random.default_rng(5)
    src = rng.integers(0, 256, (61, 47, 3), dtype=np.uint8)
    src[0, :3] = [[0, 127, 128], [255, 1, 254], [129, 126, 2]]
    big = np.zeros((70, 50, 3), lut.dtype)
    dst = big[4:65, 2:49]  # a strided window, as the detector's letterbox region is
    pm(src, dst)
    assert np.array_equal(dst, lut[src])
    assert not big[:4].any() and not big[65:].any() and not big[:, :2].any() and not big[:, 49:].any()
    with pytest.raises(ValueError):
        pm(src, np.zeros((61, 47, 3), np.float64 if lut.dtype != np.float64 else np.int8))


def test_invoke_with_refuses_a_kept_view() -> None:
    model = runtime.load(MODELS / "face_embedder_int8.tflite", 1)
    kept: list[np.ndarray] = []
    with pytest.raises(RuntimeError):
        model.invoke_with(kept.append)


def test_invoke_window_brackets_the_invoke() -> None:
    model = runtime.load(MODELS / "face_embedder_int8.tflite", 1)
    before = time.perf_counter()
    model.invoke_with(lambda view: view.fill(0))
    start, end = model.invoke_window
    assert before <= start <= end <= time.perf_counter()
