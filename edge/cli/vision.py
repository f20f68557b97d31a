"""Command line for faces and evaluation: `faces enroll|consent|list|forget|test|migrate`,
`eval lfw|detect|redaction`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli.common import load_config_for
from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.actions.faces import Image
    from edge.config import Config
    from edge.vision.consent import Status
    from edge.vision.detector import Detection
    from edge.vision.engine import FaceEngine
    from edge.vision.recognise import F32, Thresholds


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from edge.cli.common import add_config_arg

    faces = sub.add_parser("faces", help="enrolled people: enroll (with consent), renew consent, list, forget, "
                                         "test a photo")
    fsub = faces.add_subparsers(dest="faces_command", metavar="ACTION")
    fsub.required = True

    enroll = fsub.add_parser("enroll", help="enrol a household member from photos, recording who consented")
    add_config_arg(enroll)
    enroll.add_argument("name", metavar="NAME", help="the person's name, as events will report it")
    enroll.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos of the person's face")
    _consent_args(enroll)
    choose = enroll.add_mutually_exclusive_group()
    choose.add_argument("--face", type=int, metavar="N",
                        help="in a photo with several faces, enrol face N of the listing (one IMAGE only)")
    choose.add_argument("--largest", action="store_true",
                        help="in a photo with several faces, enrol the largest one")
    again = enroll.add_mutually_exclusive_group()
    again.add_argument("--replace", action="store_true",
                       help="NAME is enrolled already: replace that enrolment (photos, templates, consent)")
    again.add_argument("--add", action="store_true",
                       help="NAME is enrolled already: add these photos to it (the consent record becomes this one)")
    enroll.set_defaults(func=cmd_enroll)

    renew = fsub.add_parser("consent", help="record a new consent for someone enrolled (renew it), photos kept")
    add_config_arg(renew)
    renew.add_argument("name", metavar="NAME", help="the enrolled name")
    _consent_args(renew)
    renew.set_defaults(func=cmd_consent)

    lst = fsub.add_parser("list", help="list enrolled people, their consent records and whether each is valid")
    add_config_arg(lst)
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_list)

    forget = fsub.add_parser("forget", help="delete a person's templates, photos and consent record")
    add_config_arg(forget)
    forget.add_argument("name", metavar="NAME", help="the enrolled name")
    forget.set_defaults(func=cmd_forget)

    test = fsub.add_parser("test", help="who the device would recognise in a photo (stores nothing)")
    add_config_arg(test)
    test.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos to look at")
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(func=cmd_test)

    migrate = fsub.add_parser("migrate", help="replace whole photos an older version kept by the enrolled face's chip")
    add_config_arg(migrate)
    migrate.set_defaults(func=cmd_migrate)
    _register_eval(sub)


def _register_eval(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from edge.cli.common import add_config_arg

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
    red = esub.add_parser("redaction", help="faces a reference detector finds in videos vs what survives in their "
                                            "export through the real footage path (docs/redaction-eval.md)")
    add_config_arg(red)
    red.add_argument("videos", nargs="+", type=Path, metavar="VIDEO",
                     help="video files (mp4, GIF, anything OpenCV reads), each recorded into a scratch clip store "
                          "and exported under a test warrant the owner approves")
    red.add_argument("--reference-python", type=Path, default=None, metavar="PATH",
                     help="python of a venv with face_recognition (dlib) that runs the reference detector; without "
                          "it a weaker, clearly labelled fallback is used (OpenCV Haar, else the shipped detector)")
    red.add_argument("--reference", choices=["dlib-cnn", "haar"], default="dlib-cnn",
                     help="the reference detector run in --reference-python (default dlib-cnn, upsampled once)")
    red.add_argument("--frames", type=int, default=None, metavar="N", help="only the first N frames of each video")
    red.add_argument("--every", type=int, default=1, metavar="N",
                     help="the reference looks at every Nth frame only (the export holds all; dlib's CNN costs "
                          "seconds of CPU per frame)")
    red.add_argument("--unblurred", action="store_true",
                     help="export with the owner's explicit unblur (the baseline: every reference face leaks)")
    red.add_argument("--keep", type=Path, default=None, metavar="DIR",
                     help="keep each scratch state dir and export under DIR (default: deleted)")
    red.add_argument("--json", action="store_true", help="print JSON")
    red.set_defaults(func=cmd_eval_redaction)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]

    return load_config_for(args)


def _engine(cfg, model: str | None = None):  # type: ignore[no-untyped-def]
    from edge.actions.faces import load_engine

    return load_engine(cfg, model)


def _consent_args(parser: argparse.ArgumentParser) -> None:
    from edge.vision.consent import DEFAULT_PURPOSE

    parser.add_argument("--consent-by", required=True, help="who gave consent (the person, or their guardian)")
    parser.add_argument("--consent-date", required=True, type=_consent_date, metavar="DATE",
                        help="the day consent was given, YYYY-MM-DD (not after today)")
    parser.add_argument("--consent-until", required=True, type=_consent_date, metavar="DATE",
                        help="the last day the consent covers, YYYY-MM-DD (after --consent-date, not in the past); "
                             "from the day after, the person is not recognised until the consent is renewed")
    parser.add_argument("--consent-purpose", default=DEFAULT_PURPOSE, metavar="TEXT",
                        help=f"what the person agreed to (default: \"{DEFAULT_PURPOSE}\"; written into the record)")


def _consent_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _consent(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from edge.vision.consent import Consent

    return Consent(args.consent_by, args.consent_date, args.consent_purpose, args.consent_until)


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge.actions.faces import enrol
    from edge.clock import SystemClock
    from edge.vision.gallery import Existing

    existing: Existing = "replace" if args.replace else "add" if args.add else "refuse"
    done = enrol(_config(args), SystemClock(), args.name, args.images, _consent(args),
                 face=args.face, largest=args.largest, existing=existing)
    for line in done.migrated:
        print(f"migrated {line}", file=sys.stderr)
    person = done.person
    print(
        f"{done.outcome} {person.name}: {person.photos} photo(s) (face chips only), consent by {person.consent_by} "
        f"on {person.consent_date} until {person.consent_until} ({person.consent_purpose}); id {person.person_id} "
        "in the audit log"
    )
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    from edge.actions.faces import renew
    from edge.clock import SystemClock

    person = renew(_config(args), SystemClock(), args.name, _consent(args))
    print(f"consent recorded for {person.name}: by {person.consent_by} on {person.consent_date} until "
          f"{person.consent_until} ({person.consent_purpose}); id {person.person_id} in the audit log")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from edge.vision.pipeline import thresholds

    cfg = _config(args)
    th = thresholds(cfg.faces)
    enrolled, recognised, report = _look(cfg, th, args.images)
    if args.json:
        print(json.dumps({"enrolled": enrolled, "recognised": recognised, "recognise_distance": th.recognise,
                          "unknown_distance": th.unknown, "images": report}, indent=2))
        return 0
    ended = f" ({enrolled - recognised} not recognised: consent ended)" if recognised < enrolled else ""
    print(
        f"{enrolled} enrolled{ended}; a face is named at distance <= {th.recognise}, unknown above {th.unknown} "
        "(a photo is one frame: the device votes over several)"
    )
    for entry in report:
        found: list[dict[str, object]] = entry["faces"]  # type: ignore[assignment]
        print(f"{entry['image']}: {len(found) or 'no'} face(s)")
        for f in found:
            b: dict[str, float] = f["box"]  # type: ignore[assignment]
            where = f"  face {f['face']}: x={b['x']} y={b['y']} w={b['w']} h={b['h']} score {b['score']:.2f}  "
            gone: dict[str, object] | None = f["consent_ended"]  # type: ignore[assignment]
            if gone is not None:
                print(f"{where}{f['result']}: {gone['name']} (distance {gone['distance']:.3f}), but their consent "
                      f"{gone['status']}")
            elif f["name"]:
                print(f"{where}{f['name']} (distance {f['distance']:.3f})")
            elif f["result"] in ("unknown", "undecided") and f["nearest"] is not None:
                print(f"{where}{f['result']} (nearest {f['nearest']}, distance {f['distance']:.3f})")
            elif f["result"] == "unknown":
                print(f"{where}unknown (nobody enrolled)")
            else:
                print(f"{where}{f['result']}")
    return 0




def _look(cfg: Config, th: Thresholds, images: list[Path]) -> tuple[int, int, list[dict[str, object]]]:
    """What the device would make of each face in the photos, judged as the daemon does today: a person whose
    consent has ended is not matched (their nearness is only noted). Reads the gallery, writes nothing."""
    from edge.actions.faces import faces_in, read_image
    from edge.clock import SystemClock
    from edge.vision import consent as C
    from edge.vision.gallery import Gallery

    gallery = Gallery(cfg.state_dir, recover=False)  # read only: nothing in the state dir is written
    people = {p.name: p for p in gallery.people()}
    templates = gallery.templates()
    engine = _engine(cfg)
    for p in people.values():
        if p.embedder != engine.embedder_file:  # enrolled with the other precision: as the daemon does
            templates[p.name] = gallery.reembed(p.name, engine)
    today = C.today_of(SystemClock().now())
    status = {name: C.status(p, today) for name, p in people.items()}
    active = {n: t for n, t in templates.items() if status[n].recognised}
    ended = {n: t for n, t in templates.items() if not status[n].recognised}
    report: list[dict[str, object]] = []
    for path in images:
        img = read_image(path)
        found = enumerate(faces_in(engine, img), 1)
        faces = [_face(engine, img, det, i, th, active, ended, status) for i, det in found]
        report.append({"image": str(path), "faces": faces})
    return len(templates), len(active), report


def _face(engine: FaceEngine, img: Image, det: Detection, i: int, th: Thresholds, active: dict[str, F32],
          ended: dict[str, F32], status: dict[str, Status]) -> dict[str, object]:
    from edge.actions.faces import box
    from edge.vision import recognise as R

    chip = engine.chip(img, det)
    face: dict[str, object] = {"face": i, "box": box(det), "name": None, "nearest": None, "distance": None,
                               "consent_ended": None}
    if not R.passes_quality(det.width, R.sharpness(chip), th):
        face["result"] = "too small or blurred to recognise"
        return face
    emb = engine.embedder.embed(chip)
    m = R.match(emb, active, th)
    named = m.name not in ("", R.UNKNOWN)
    face["result"] = "recognised" if named else m.name or "undecided"
    face["name"] = m.name if named else None
    if m.nearest is not None:
        face["nearest"], face["distance"] = m.nearest, round(m.distance, 3)
    if not named:
        gone = R.match(emb, ended, th)
        if gone.name not in ("", R.UNKNOWN) and (m.nearest is None or gone.distance < m.distance):
            face["consent_ended"] = {"name": gone.name, "distance": round(gone.distance, 3),
                                     "status": status[gone.name].text}
    return face


def cmd_migrate(args: argparse.Namespace) -> int:
    from edge.vision.gallery import Gallery
    from edge.vision.gallery_legacy import legacy_chipper

    cfg = _config(args)
    gallery = Gallery(cfg.state_dir)
    if not gallery.whole_photos():
        print("nothing to migrate: the gallery keeps face chips only")
        return 0
    for line in gallery.migrate(legacy_chipper(_engine(cfg), cfg.faces.unknown_distance)):
        print(f"migrated {line}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from edge.actions.faces import list_faces
    from edge.clock import SystemClock

    household = list_faces(_config(args), SystemClock())
    listed = household.listed
    if args.json:
        print(json.dumps([{**asdict(e.person), "consent_status": asdict(e.status)} for e in listed], indent=2))
    else:
        for e in listed:
            p = e.person
            print(
                f"{p.name}\tid={p.person_id or '-'}\tphotos={p.photos}\tconsent_by={p.consent_by}"
                f"\tconsent_date={p.consent_date}\tconsent_until={p.consent_until or '-'}"
                f"\tconsent_purpose={p.consent_purpose or '-'}\tconsent={e.status.text}\tenrolled={p.enrolled_at}"
            )
        if not listed:
            print("nobody enrolled")
    for e in listed:
        if e.status.warning:
            print(f"warning: {_consent_warning(e.person.name, e.status)}", file=sys.stderr)
    if household.whole_photos:  # an older version kept whole photos (bystanders included)
        print(f"whole photos kept for {', '.join(household.whole_photos)}: `doorbell-edge faces migrate` keeps only "
              "the enrolled face", file=sys.stderr)
    return 0


def _consent_warning(name: str, status: Status) -> str:
    renew = f"`doorbell-edge faces consent {name!r} --consent-by ... --consent-date ... --consent-until ...`"
    if status.code == "no_end_date":
        return f"{name}: no consent end date recorded: record one with {renew}"
    if status.code == "ended":
        return f"{name}: consent {status.text}: renew it with {renew}, or `doorbell-edge faces forget {name!r}`"
    return f"{name}: consent {status.text}: renew it with {renew}"


def cmd_forget(args: argparse.Namespace) -> int:
    from edge.actions.faces import forget

    if not forget(_config(args), args.name):
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


def cmd_eval_redaction(args: argparse.Namespace) -> int:
    from edge.evaluation.redaction import (
        Reference,
        SubprocessReference,
        evaluate_video,
        fallback_reference,
        report_text,
    )

    for video in args.videos:  # a wrong path fails before anything is recorded or loaded
        if not video.is_file():
            raise EdgeError(f"eval redaction: {video}: no such video file")
    if args.frames is not None and args.frames < 1:
        raise EdgeError("eval redaction: --frames must be at least 1")
    if args.every < 1:
        raise EdgeError("eval redaction: --every must be at least 1")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    cfg = _config(args)
    reference: Reference
    if args.reference_python is not None:
        reference = SubprocessReference(args.reference_python, args.reference)
    elif args.reference != "dlib-cnn":
        raise EdgeError("eval redaction: --reference needs --reference-python")
    else:
        reference = fallback_reference()
    try:
        results = [evaluate_video(cfg, video, reference, max_frames=args.frames, unblurred=args.unblurred,
                                  keep=args.keep, every=args.every) for video in args.videos]
    finally:
        reference.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        report_text(results)
    return 0
