#!/usr/bin/env python3
"""Face pipeline benchmark: detector, embedder (alignment included) and end-to-end ms, fps, peak RSS,
int8 vs float at 1 and 2 threads, and the delay until an enrolled visitor is named.

    python bench/vision.py [--json] [--data ../shared/data] [--repeat 30]

Frames are 640x480 crops of the one-face photos in ../shared/data/gallery.  face_recognition (dlib)
runs on the same frames only when that optional package is importable here or in the interpreter
given by --face-recognition-python (a separate venv: `pip install "setuptools<81" dlib face_recognition`
compiles dlib for ~10 minutes).  Prints median and p90 (and the minimum).

Each engine runs over all frames in a block (engines take turns, repeat by repeat).  For int8 at
2 threads the calls are split at the model invokes (detector: preprocess / invoke / decode; per face:
mesh preprocess / mesh invoke / fit + chip / embed invoke): the invokes are bound by the CPU's SIMD
(printed from /proc/cpuinfo), the rest is this project's code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.clock import FakeClock  # noqa: E402
from edge.config import FacesConfig  # noqa: E402
from edge.types import Frame  # noqa: E402
from edge.vision import recognise as R  # noqa: E402
from edge.vision.consent import DEFAULT_PURPOSE, Consent  # noqa: E402
from edge.vision.engine import FaceEngine  # noqa: E402
from edge.vision.gallery import Gallery  # noqa: E402
from edge.vision.pipeline import FacePipeline  # noqa: E402

EX = Path("gallery") / "face_recognition" / "examples"
ONE_FACE = [
    "obama-480p.jpg",
    "obama-720p.jpg",
    "obama_small.jpg",
    "biden.jpg",
    "alex-lacamoire.png",
    "lin-manuel-miranda.png",
    "knn_examples/test/obama1.jpg",
    "knn_examples/train/rose_leslie/img1.jpg",
    "knn_examples/train/kit_harington/john1.jpeg",
    "knn_examples/test/alex_lacamoire1.jpg",
]


def imread(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return np.asarray(img)


def to_640x480(img: np.ndarray, face_frac: float = 0.0) -> np.ndarray:
    """Cover 640x480 with the photo (scaled, centre-cropped), like a doorbell's main stream."""
    h, w = img.shape[:2]
    s = max(640 / w, 480 / h)
    r = cv2.resize(img, (max(640, round(w * s)), max(480, round(h * s))), interpolation=cv2.INTER_AREA)
    y, x = (r.shape[0] - 480) // 2, (r.shape[1] - 640) // 2
    return np.ascontiguousarray(r[y : y + 480, x : x + 640])


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "median": round(float(np.median(a)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "min": round(float(a.min()), 3),  # the uncontended cost when other processes share the cores
    }


SIMD_FLAGS = ("sse4_1", "avx", "fma", "avx2", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni")


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """The CPU model and the SIMD levels XNNPACK can pick kernels for (from the kernel's flags)."""
    model, flags = "unknown", set[str]()
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and model == "unknown":
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in SIMD_FLAGS if f in flags]
    if "asimddp" in flags or "asimd" in flags:  # aarch64 (Raspberry Pi): NEON, dot product
        simd += [f for f in ("asimd", "asimddp", "i8mm") if f in flags]
    info: dict[str, object] = {"model": model, "cores": os.cpu_count(), "simd": simd}
    x86 = bool(flags) and "asimd" not in flags
    if x86 and "avx2" not in flags:
        info["note"] = "no AVX2: XNNPACK's int8 kernels have no speed advantage over float here"
    elif x86 and not flags & {"avx512_vnni", "avx512vnni", "avx_vnni"}:
        info["note"] = "no VNNI: XNNPACK's int8 kernels are about as fast as its AVX2 float kernels here"
    return info


def _blocks(ms: dict[str, list[float]], engine: FaceEngine, frames: list[np.ndarray], stages: bool) -> None:
    """One engine over every frame; with `stages`, each call split at the model invokes."""
    templates = {"x": np.zeros((1, 128), np.float32)}
    th = R.Thresholds()
    det_m, mesh_m, emb_m = engine.detector.model, engine.aligner.mesh, engine.embedder.model
    for img in frames:
        t0 = time.perf_counter()
        dets = engine.detect(img)
        t1 = time.perf_counter()
        det = max(dets, key=lambda d: d.width)
        emb = engine.embed_face(img, det)
        R.match(emb, templates, th)
        t2 = time.perf_counter()
        ms["det"].append(1000 * (t1 - t0))
        ms["emb"].append(1000 * (t2 - t1))
        ms["e2e"].append(1000 * (t2 - t0))
        if stages:
            (d0, d1), (m0, m1), (e0, e1) = det_m.invoke_window, mesh_m.invoke_window, emb_m.invoke_window
            for key, a, b in (
                ("det_pre", t0, d0),
                ("det_invoke", d0, d1),
                ("det_decode", d1, t1),
                ("mesh_pre", t1, m0),
                ("mesh_invoke", m0, m1),
                ("chip", m1, e0),
                ("emb_invoke", e0, e1),
                ("emb_post", e1, t2),
            ):
                ms[key].append(1000 * (b - a))


STAGES = {
    "detector": {"preprocess": "det_pre", "invoke": "det_invoke", "decode": "det_decode"},
    "embedder": {
        "mesh preprocess": "mesh_pre",
        "mesh invoke": "mesh_invoke",
        "fit + chip + input": "chip",
        "embed invoke": "emb_invoke",
        "output + match": "emb_post",
    },
}


def time_engines(
    engines: dict[str, FaceEngine], frames: list[np.ndarray], repeat: int, stages_for: str = "int8/2t"
) -> dict[str, object]:
    """Time every engine on every frame.  Each repeat runs one engine over all frames (a block, as a
    daemon runs one engine with its weights warm in cache), the engines taking turns repeat by repeat
    so that load from other processes on the shared cores falls on all engines alike."""
    keys = ["det", "emb", "e2e"] + [k for group in STAGES.values() for k in group.values()]
    ms: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in engines}
    scratch: dict[str, list[float]] = {k: [] for k in keys}
    for engine in engines.values():  # warm up each engine: XNNPACK workspaces, frame buffers
        _blocks(scratch, engine, frames[:3], stages=False)
    for _ in range(repeat):
        for name, engine in engines.items():
            _blocks(scratch, engine, frames[:1], stages=False)  # untimed: this engine's weights back in cache
            _blocks(ms[name], engine, frames, stages=name == stages_for)
    out: dict[str, object] = {}
    for name, engine in engines.items():
        e2e = stats(ms[name]["e2e"])
        out[name] = {
            "detector_ms": stats(ms[name]["det"]),
            "embedder_ms_per_face": stats(ms[name]["emb"]),
            "end_to_end_ms": e2e,
            "fps": round(1000 / e2e["median"], 1),
            "xnnpack_partitions": {
                "detector": engine.detector.model.delegation().partitions,
                "embedder": engine.embedder.model.delegation().partitions,
            },
        }
        if name == stages_for:
            out[name]["stages_ms"] = {  # type: ignore[index]
                group: {label: stats(ms[name][key]) for label, key in parts.items()} for group, parts in STAGES.items()
            }
    return out


def name_delay(engine: FaceEngine, data: Path, fps: float = 10.0) -> dict[str, object]:
    """Simulated camera at `fps`: blank frames, then an enrolled face; frames are processed as they arrive
    (a frame waits while the previous one is still being processed).  Delay = face event time minus the
    capture time of the first frame showing the face; the vote (vote_min agreeing frames) is included."""
    delays = []
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery(Path(tmp))
        photos, embs = [], []
        for p in sorted((data / EX / "knn_examples" / "train" / "obama").glob("*.jpg")):
            img = imread(str(p))
            det = max(engine.detect(img), key=lambda d: d.width)
            photos.append(engine.chip(img, det))  # the gallery stores face chips only
            embs.append(engine.embed_face(img, det))
        consent = Consent("bench", date(2026, 1, 1), DEFAULT_PURPOSE, date(2099, 12, 31))
        g.enroll("Obama", photos, np.stack(embs), consent, engine.embedder_file)
        probes = [
            to_640x480(imread(str(data / EX / n)))
            for n in (
                "obama-480p.jpg",
                "obama-720p.jpg",
                "obama_small.jpg",
                "knn_examples/test/obama1.jpg",
                "obama-1080p.jpg",
            )
        ]
        blank = np.full((480, 640, 3), 90, np.uint8)
        for _rep in range(4):
            for probe in probes:
                clock = FakeClock()
                pipe = FacePipeline("bench", FacesConfig(), engine, g, clock)
                pipe.refresh_gallery(0.0, force=True)
                busy_until = 0.0
                first_face_t = None
                named_at = None
                for i in range(40):
                    t_cap = i / fps
                    img = blank if i < 3 else probe
                    if i >= 3 and first_face_t is None:
                        first_face_t = t_cap
                    start = max(t_cap, busy_until)
                    t0 = time.perf_counter()
                    evs = pipe.process(Frame("bench", i, clock.now(), t_cap, img))
                    busy_until = start + (time.perf_counter() - t0)
                    if any(e.type == "face" and e.fields.get("person") == "Obama" for e in evs):
                        named_at = busy_until
                        break
                if named_at is not None and first_face_t is not None:
                    delays.append(1000 * (named_at - first_face_t))
    return {"camera_fps": fps, "runs": len(delays), "named": len(delays), "delay_ms": stats(delays) if delays else None}


def daemon_rss(data: Path, seconds: float = 10.0, full: bool = False) -> dict[str, object]:
    """Peak RSS of the real daemon (`doorbell-edge run`).

    Default: a looping video with faces through the opencv source, motion gate and the int8 face stage; no
    broker, no recording. full=True: the built-in defaults (demo camera, faces, recording with pre-roll,
    MQTT pointed at a port where no broker listens, so the outbox is in use).
    """
    video = data / "video" / "face_recognition_short_hamilton_clip.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.yaml"
        if full:
            cfg.write_text("mqtt:\n  host: 127.0.0.1\n  port: 1\n")
        else:
            cfg.write_text(
                "mqtt:\n  enabled: false\nrecording:\n  enabled: false\n"
                "cameras:\n  front_door:\n    source: opencv\n"
                f"    url: {video}\n    loop: true\n    width: 640\n    height: 360\n"
            )
        env = {"DOORBELL_EDGE_STATE_DIR": str(Path(tmp) / "state"), "PATH": "/usr/bin:/bin"}
        # VmHWM of the child itself: ru_maxrss of children would count the fork of this (bigger) process
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--for", str(seconds)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        peak_kb = 0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.1)
        stdout = proc.stdout.read() if proc.stdout else ""
    kinds = [json.loads(line).get("type") for line in stdout.splitlines() if line.startswith("{")]
    return {
        "exit": proc.returncode,
        "seconds": seconds,
        "source": "defaults (demo camera, faces, recording, MQTT outbox)" if full else video.name,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "person_events": kinds.count("person"),
        "face_events": kinds.count("face"),
    }


def pipeline_rss(data: Path) -> float:
    """Peak RSS (MB) of this benchmark process after the int8 engine ran: models + one frame pipeline."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


_FR_SNIPPET = """
import json, sys, time
import numpy as np
import face_recognition
frames = np.load(sys.argv[1])
repeat = int(sys.argv[2])
ms, found = [], 0
for _ in range(repeat):
    for bgr in frames:
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        t0 = time.perf_counter()
        locs = face_recognition.face_locations(rgb)
        face_recognition.face_encodings(rgb, locs[:1])
        ms.append(1000 * (time.perf_counter() - t0))
        found += bool(locs)
# VmHWM: this process image only (ru_maxrss would include the benchmark process it was forked from)
hwm = [int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
print(json.dumps({"ms": ms, "found": found, "peak_rss_mb": hwm / 1024}))
"""


def face_recognition_side_by_side(
    frames: list[np.ndarray], repeat: int, python: str | None
) -> dict[str, object] | None:
    """The same frames through face_recognition (HOG detection, 5-point landmarks, dlib ResNet encoding):
    in this interpreter when the package is importable, else in `python` (a venv that has it)."""
    try:
        import face_recognition  # type: ignore[import-not-found]  # noqa: F401

        python = sys.executable
    except Exception:
        if python is None:
            return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.npy"
        np.save(path, np.stack(frames))
        proc = subprocess.run(
            [python, "-c", _FR_SNIPPET, str(path), str(repeat)], capture_output=True, text=True, timeout=1800
        )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "end_to_end_ms": stats(res["ms"]),
        "frames_with_a_face": f"{res['found']}/{len(res['ms'])}",
        "peak_rss_mb": round(res["peak_rss_mb"], 1),
        "python": python,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--face-recognition-python",
        default=None,
        help="python of a venv with face_recognition (dlib) for the side-by-side run, if this one lacks it",
    )
    ap.add_argument("--no-daemon", action="store_true", help="skip the daemon RSS run")
    args = ap.parse_args(argv)
    frames = [to_640x480(imread(str(args.data / EX / n))) for n in ONE_FACE]
    frames = [f for f in frames if len(FaceEngine.load("float", 1).detect(f)) >= 1]
    out: dict[str, object] = {"frames": len(frames), "frame_size": "640x480", "cpu": cpu_info(), "runs": {}}
    out["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    engines = {f"{m}/{t}t": FaceEngine.load(m, t) for m in ("int8", "float") for t in (1, 2)}
    runs = time_engines(engines, frames, args.repeat)
    del engines
    out["runs"] = runs
    engine = FaceEngine.load("int8", 2)
    out["name_delay"] = name_delay(engine, args.data)
    out["bench_process_peak_rss_mb"] = pipeline_rss(args.data)
    if not args.no_daemon:
        out["daemon"] = daemon_rss(args.data)
        out["daemon_defaults"] = daemon_rss(args.data, seconds=15.0, full=True)
    fr = face_recognition_side_by_side(frames, max(1, args.repeat // 10), args.face_recognition_python)
    if fr is not None and "end_to_end_ms" in fr:
        ours = runs["int8/2t"]["end_to_end_ms"]["median"]  # type: ignore[index]
        fr["ratio_vs_int8_2t"] = round(fr["end_to_end_ms"]["median"] / ours, 1)  # type: ignore[index]
    out["face_recognition"] = fr if fr is not None else "not installed (optional)"
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    cpu = cast(dict[str, Any], out["cpu"])
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; SIMD XNNPACK can use: {' '.join(cpu['simd']) or 'none'}")
    if "note" in cpu:
        print(f"note: {cpu['note']}")
    print(
        f"{len(frames)} one-face frames, 640x480; ms as median / p90 (min); load average {out['load_average_at_start']}"
    )
    print(f"{'run':10} {'detector':>22} {'embed/face':>22} {'end-to-end':>22} {'fps':>7}  partitions")
    for name, r in runs.items():
        r = cast(dict[str, Any], r)

        def f(k: str, r: dict = r) -> str:  # type: ignore[type-arg]
            return f"{r[k]['median']:.2f} / {r[k]['p90']:.2f} ({r[k]['min']:.2f})"

        print(
            f"{name:10} {f('detector_ms'):>22} {f('embedder_ms_per_face'):>22} {f('end_to_end_ms'):>22} "
            f"{r['fps']:>7}  {r['xnnpack_partitions']}"
        )
    for name, r in runs.items():
        r = cast(dict[str, Any], r)
        for group, parts in r.get("stages_ms", {}).items():
            cells = ", ".join(f"{label} {v['median']:.2f} ({v['min']:.2f})" for label, v in parts.items())
            print(f"{name} {group} stages, median (min): {cells}")
    nd = out["name_delay"]
    print(f"name delay (int8, 2 threads, camera 10 fps, vote included): {nd}")
    print(f"peak RSS of this benchmark process (all four engines loaded): {out['bench_process_peak_rss_mb']} MB")
    if "daemon" in out:
        print(f"peak RSS of the daemon (opencv video source, int8 faces, 10 s): {out['daemon']}")
        print(f"peak RSS of the daemon with the built-in defaults (15 s): {out['daemon_defaults']}")
    print(f"face_recognition: {out['face_recognition']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
