"""Command line for faces and evaluation: `faces enroll|list|forget`, `eval lfw`, `eval detect`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from edge.errors import EdgeError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from edge.cli import add_config_arg

    faces = sub.add_parser("faces", help="enrolled people: enroll (with consent), list, forget")
    fsub = faces.add_subparsers(dest="faces_command", metavar="ACTION")
    fsub.required = True

    enroll = fsub.add_parser("enroll", help="enrol a household member from photos, recording who consented")
    add_config_arg(enroll)
    enroll.add_argument("name", metavar="NAME", help="the person's name, as events will report it")
    enroll.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos of the person's face")
    enroll.add_argument("--consent-by", required=True, help="who gave consent (the person, or their guardian)")
    enroll.add_argument("--consent-date", required=True, type=date.fromisoformat, metavar="DATE",
                        help="the day consent was given, YYYY-MM-DD")
    enroll.set_defaults(func=cmd_enroll)

    lst = fsub.add_parser("list", help="list enrolled people and their consent records")
    add_config_arg(lst)
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_list)

    forget = fsub.add_parser("forget", help="delete a person's templates, photos and consent record")
    add_config_arg(forget)
    forget.add_argument("name", metavar="NAME", help="the enrolled name")
    forget.set_defaults(func=cmd_forget)

    ev = sub.add_parser("eval", help="measure accuracy: LFW verification, detector recall / false positives")
    esub = ev.add_subparsers(dest="eval_command", metavar="SET")
    esub.required = True
    lfw = esub.add_parser("lfw", help="n-fold LFW verification accuracy (DIR/pairs.txt, DIR/images/NAME/...)")
    add_config_arg(lfw)
    lfw.add_argument("--data", required=True, type=Path, metavar="DIR",
                     help="LFW folder holding pairs.txt and images/NAME/NAME_0001.jpg")
    lfw.add_argument("--model", choices=["int8", "float"], default=None,
                     help="embedder to measure (default: faces.model from the config)")
    lfw.add_argument("--pairs", type=int, default=None, metavar="N", help="use a balanced subset of N pairs")
    lfw.add_argument("--json", action="store_true", help="print JSON")
    lfw.set_defaults(func=cmd_eval_lfw)
    det = esub.add_parser("detect", help="detector recall on face photos and false positives on no-face photos")
    add_config_arg(det)
    det.add_argument("--faces", required=True, type=Path, metavar="DIR",
                     help="folder of photos each showing a face (searched recursively)")
    det.add_argument("--negatives", required=True, type=Path, metavar="DIR",
                     help="folder of photos with no face in them (searched recursively)")
    det.add_argument("--model", choices=["int8", "float"], default=None,
                     help="detector to measure (default: faces.model from the config)")
    det.add_argument("--json", action="store_true", help="print JSON")
    det.set_defaults(func=cmd_eval_detect)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from edge.config_load import load_config

    return load_config(args.config)


def _engine(cfg, model: str | None = None):  # type: ignore[no-untyped-def]
    from edge.vision.engine import FaceEngine

    return FaceEngine.load(
        model="float" if (model or cfg.faces.model) == "float" else "int8",
        threads=cfg.faces.threads,
        detector_score=cfg.faces.detector_score,
    )


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge.vision.gallery import Gallery

    cfg = _config(args)
    engine = _engine(cfg)
    photos: list[tuple[str, bytes]] = []
    templates = []
    for path in args.images:
        blob = path.read_bytes() if path.is_file() else None
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR) if blob else None
        if img is None or blob is None:
            raise EdgeError(f"{path}: not a readable image")
        dets = engine.detect(img)
        if not dets:
            raise EdgeError(f"{path}: no face found")
        det = max(dets, key=lambda d: d.width * d.height)  # the subject, if others are in the background
        if det.width < cfg.faces.min_face_px:
            raise EdgeError(f"{path}: face too small ({det.width:.0f} px < faces.min_face_px)")
        templates.append(engine.embed_face(img, det))
        # re-encoded, so no EXIF (camera, GPS position, time) from the original file is kept
        ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise EdgeError(f"{path}: cannot re-encode")
        photos.append((".jpg", jpeg.tobytes()))
    person = Gallery(cfg.state_dir).enroll(
        args.name, photos, np.stack(templates), args.consent_by, args.consent_date, engine.embedder_file
    )
    print(f"enrolled {person.name}: {person.photos} photo(s), consent by {person.consent_by} on {person.consent_date}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from edge.vision.gallery import Gallery

    people = Gallery(_config(args).state_dir).people()
    if args.json:
        print(json.dumps([asdict(p) for p in people], indent=2))
    else:
        for p in people:
            print(
                f"{p.name}\tphotos={p.photos}\tconsent_by={p.consent_by}\tconsent_date={p.consent_date}"
                f"\tenrolled={p.enrolled_at}"
            )
        if not people:
            print("nobody enrolled")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from edge.vision.gallery import Gallery

    if not Gallery(_config(args).state_dir).forget(args.name):
        print(f"{args.name}: not enrolled", file=sys.stderr)
        return 1
    print(f"forgot {args.name}: templates, photos and consent record deleted")
    return 0


def cmd_eval_lfw(args: argparse.Namespace) -> int:
    from edge.vision.eval import evaluate_lfw, lfw_pairs_file

    lfw_pairs_file(args.data)  # a wrong --data fails before the models load
    cfg = _config(args)
    engine = _engine(cfg, args.model)
    r = evaluate_lfw(args.data, engine.detector, engine.embed_face, limit_pairs=args.pairs, model=engine.model)
    if args.json:
        print(json.dumps(r.as_dict(), indent=2))
    else:
        print(f"LFW {r.pairs} pairs, {len(r.fold_accuracies)} folds, model {r.model}")
        print(f"  accuracy          {100 * r.accuracy_mean:.2f}% +- {100 * r.accuracy_std:.2f}")
        print(f"  per fold          {' '.join(f'{100 * a:.2f}' for a in r.fold_accuracies)}")
        print(f"  thresholds        {' '.join(f'{t:.3f}' for t in r.thresholds)}")
        print(f"  TAR @ FAR=1e-3    {100 * r.tar_at_far_1e3:.2f}%")
        print(
            f"  detector hit rate {100 * r.detector_hit_rate:.2f}% ({r.images_without_detection} of {r.images} "
            "images without a face at the normal threshold)"
        )
    return 0


def cmd_eval_detect(args: argparse.Namespace) -> int:
    from edge.vision.eval import evaluate_detect, photo_folder

    faces = photo_folder(args.faces, "eval detect: --faces")  # a missing or empty folder fails before models load
    negatives = photo_folder(args.negatives, "eval detect: --negatives")
    cfg = _config(args)
    engine = _engine(cfg, args.model)
    r = evaluate_detect(engine.detector, faces, negatives)
    if args.json:
        print(json.dumps(r.as_dict(), indent=2))
    else:
        print(f"recall {100 * r.recall:.2f}% ({r.face_images_detected}/{r.face_images} face photos)")
        print(
            f"false positives {r.false_positives_per_100:.2f} per 100 negatives ({r.false_positives} on "
            f"{r.negative_images_with_fp} of {r.negative_images} images)"
        )
        if r.unreadable:
            print(f"left out {r.unreadable} file(s) that are not readable images")
    return 0
