"""The face stage: motion frames -> detect -> track -> embed the best faces -> recognise -> person/face events.

Privacy: embeddings of visitors who are not enrolled live only in this object's memory, under a
short-lived visit id, and are dropped at most `stranger_ttl_s` (<= 60 s) after their visit ends;
nothing about them is written anywhere.  Events carry names, ids, scores and boxes, never an
embedding or a face crop.  A person whose consent has ended (edge.vision.consent) is matched like a
stranger: their templates are left out from the first check on the day after their end date.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.clock import Clock
from edge.config import Config, FacesConfig
from edge.errors import StorageError
from edge.events.bus import Event, EventBus
from edge.queues import Closed, DropOldestQueue
from edge.stage import Feature, Host, StageLoop
from edge.types import Frame, MotionFrame
from edge.vision import consent as C
from edge.vision import recognise as R
from edge.vision.detector import INPUT as DETECTOR_INPUT
from edge.vision.detector import Detection, scale_detection
from edge.vision.engine import FaceEngine
from edge.vision.gallery import Gallery, Person
from edge.vision.gallery_legacy import migrate_at_start
from edge.vision.tracker import IouTracker, Track

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
GALLERY_CHECK_S = 5.0


@dataclass
class Visit:
    """What one track learnt; kept only in memory."""

    id: str
    vote: R.Vote
    embeddings: list[F32] = field(default_factory=list)
    name: str | None = None
    best_score: float = 0.0


@dataclass
class _Stranger:
    visit_id: str
    embeddings: list[F32]
    ended_mono: float


def thresholds(cfg: FacesConfig) -> R.Thresholds:
    return R.Thresholds(
        recognise=cfg.recognise_distance,
        unknown=cfg.unknown_distance,
        min_face_px=cfg.min_face_px,
        min_sharpness=cfg.min_sharpness,
        vote_frames=cfg.vote_frames,
        vote_min=cfg.vote_min,
    )


class FacePipeline:
    """Synchronous core of the stage: `process(frame)` returns the events that frame caused."""

    def __init__(
        self,
        camera: str,
        cfg: FacesConfig,
        engine: FaceEngine,
        gallery: Gallery | None,
        clock: Clock,
        templates: dict[str, F32] | None = None,
    ) -> None:
        self.camera = camera
        self.cfg = cfg
        self.engine = engine
        self.gallery = gallery
        self.clock = clock
        self.th = thresholds(cfg)
        self.tracker = IouTracker(min_iou=0.3, max_age_s=cfg.visit_end_s)
        self.templates: dict[str, F32] = templates if templates is not None else {}  # the ones matched against
        self._enrolled: dict[str, tuple[Person, F32]] = {}  # everyone in the gallery, consent ended or not
        self._today: date | None = None  # the local day `templates` was chosen for
        self._ended: list[str] = []  # ids of the people left out, as last logged
        self._stamp = -1.0
        self._next_check = 0.0
        self._strangers: list[_Stranger] = []
        self.faces_embedded = 0

    # --- gallery -------------------------------------------------------------------------------------------
    def refresh_gallery(self, mono: float, force: bool = False) -> None:
        """Every GALLERY_CHECK_S: reload the gallery when it changed on disk, and choose whose templates are
        matched when it changed or the local day did (a day passing, or the wall clock stepping either way)."""
        if self.gallery is None or (mono < self._next_check and not force):
            return
        self._next_check = mono + GALLERY_CHECK_S
        today = C.today_of(self.clock.now())
        try:
            stamp = self.gallery.stamp()
            if stamp == self._stamp and today == self._today:
                return
            if stamp != self._stamp:
                self._load()
                self._stamp = stamp
        except StorageError as exc:  # the daemon's housekeeping says so loudly (log + a system event)
            log.debug("gallery not loaded: %s", exc)
            return
        self._choose(today)

    def _load(self) -> None:
        assert self.gallery is not None
        people = {p.name: p for p in self.gallery.people()}
        templates = self.gallery.templates()
        for name, person in people.items():
            if person.embedder != self.engine.embedder_file:
                templates[name] = self._reembed(name)  # enrolled with the other precision: redo from the photos
        self._enrolled = {name: (people[name], t) for name, t in templates.items() if name in people}
        log.info("gallery loaded: %d enrolled", len(templates))

    def _choose(self, today: date) -> None:
        """Match only against people whose consent covers `today`; nothing is deleted for an ended consent (a
        wrong clock would make that irreversible): their templates stay on disk and in `_enrolled`."""
        active, ended = {}, []
        for name, (person, templates) in self._enrolled.items():
            if C.status(person, today).recognised:
                active[name] = templates
            else:
                ended.append(person.person_id or "(no id)")
        if ended and ended != self._ended:
            log.warning("consent ended for %d enrolled person(s) (ids %s): not recognised until it is renewed",
                        len(ended), ", ".join(ended))
        self._ended = ended
        self.templates = active
        self._today = today

    def _reembed(self, name: str) -> F32:
        assert self.gallery is not None
        return self.gallery.reembed(name, self.engine)  # from the stored face chips

    # --- frames --------------------------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[Event]:
        self.refresh_gallery(frame.mono)
        image = frame.image
        dets = self._detect(frame)
        matched, ended = self.tracker.update(dets, frame.mono)
        events: list[Event] = []
        self._end(ended, frame.mono)
        # the largest faces first; at most max_faces embedded per frame
        matched.sort(key=lambda td: -td[1].width)
        embedded = 0
        for track, det in matched:
            visit = track.data.get("visit")
            if not isinstance(visit, Visit):
                visit = Visit(uuid.uuid4().hex[:12], R.Vote(self.th))
                track.data["visit"] = visit
                events.append(
                    self._event(
                        "person",
                        frame,
                        {"confidence": round(det.score, 3), "track_id": track.id, "box": _norm_box(det, image.shape)},
                    )
                )
            visit.best_score = max(visit.best_score, det.score)
            if visit.vote.decided is not None or embedded >= self.cfg.max_faces:
                continue
            if det.width < self.th.min_face_px:
                continue
            chip = self.engine.chip(image, det)
            if R.sharpness(chip) < self.th.min_sharpness:
                continue
            emb = self.engine.embedder.embed(chip)
            embedded += 1
            self.faces_embedded += 1
            m = R.match(emb, self.templates, self.th)
            if m.name != R.UNKNOWN and m.name:
                visit.embeddings.clear()  # a named visitor: their embeddings are not needed
            else:
                visit.embeddings.append(emb)
                self._relink(visit, emb, frame.mono)
            decided = visit.vote.add(m)
            if decided is not None:
                visit.name = decided
                # confidence: the share of this visit's embedded frames that voted for the decision
                share = round(visit.vote.names.count(decided) / len(visit.vote.names), 3)
                fields: dict[str, object] = {"confidence": share, "track_id": track.id}
                if decided == R.UNKNOWN:
                    fields.update(result="unknown", visit_id=visit.id)
                else:
                    fields.update(result="known", person=decided)
                    visit.embeddings.clear()
                events.append(self._event("face", frame, fields))
        self._purge(frame.mono)
        return events

    def _detect(self, frame: Frame) -> list[Detection]:
        """Detect on the analysis stream when it is at least the detector's 192 px (the detector
        letterboxes to 192 anyway), and map the boxes to the main image, where chips are cut."""
        lores, image = frame.lores, frame.image
        if lores is None or max(lores.shape[:2]) < DETECTOR_INPUT:
            return self.engine.detect(image)
        sx, sy = image.shape[1] / lores.shape[1], image.shape[0] / lores.shape[0]
        return [scale_detection(d, sx, sy) for d in self.engine.detect(lores)]

    def tick(self, mono: float) -> None:
        """Time passes without frames: end stale visits and drop expired stranger embeddings."""
        self._end(self.tracker.expire(mono), mono)
        self._purge(mono)

    def stranger_embeddings(self) -> int:
        """How many stranger embeddings are held in memory (for tests and health)."""
        live = sum(
            len(v.embeddings) for t in self.tracker.tracks.values() if isinstance(v := t.data.get("visit"), Visit)
        )
        return live + sum(len(s.embeddings) for s in self._strangers)

    def clear(self) -> None:
        self.tracker.tracks.clear()
        self._strangers.clear()

    # --- internals -----------------------------------------------------------------------------------------
    def _relink(self, visit: Visit, emb: F32, mono: float) -> None:
        """A stranger back within the TTL keeps the visit id of their previous pass (nothing else is kept)."""
        for s in self._strangers:
            if (
                s.embeddings
                and float(np.min(np.linalg.norm(np.stack(s.embeddings) - emb, axis=1))) <= self.th.recognise
                and mono - s.ended_mono <= self.cfg.stranger_ttl_s
            ):
                visit.id = s.visit_id
                self._strangers.remove(s)
                return

    def _end(self, ended: list[Track], mono: float) -> None:
        for t in ended:
            visit = t.data.pop("visit", None)
            if isinstance(visit, Visit) and visit.embeddings and visit.name in (None, R.UNKNOWN):
                # the TTL runs from the last sighting, so embeddings are gone <= stranger_ttl_s after it
                self._strangers.append(_Stranger(visit.id, visit.embeddings, t.last_mono))
            t.data.clear()

    def _purge(self, mono: float) -> None:
        self._strangers = [s for s in self._strangers if mono - s.ended_mono < self.cfg.stranger_ttl_s]

    def _event(self, kind: str, frame: Frame, fields: dict[str, object]) -> Event:
        return Event(kind, self.camera, frame.ts, fields)


def _norm_box(det: Detection, shape: tuple[int, ...]) -> list[float]:
    h, w = shape[:2]
    return [
        round(max(0.0, det.x0 / w), 4),
        round(max(0.0, det.y0 / h), 4),
        round(min(1.0, det.x1 / w), 4),
        round(min(1.0, det.y1 / h), 4),
    ]


class FaceStage:
    """The threaded shell: one queue of motion frames per daemon, one thread, models built once."""

    def __init__(
        self,
        cfg: FacesConfig,
        engine: FaceEngine,
        gallery: Gallery,
        clock: Clock,
        publish: Callable[[Event], object],
        beat: Callable[[], None] | None = None,
        queue_size: int = 2,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.gallery = gallery
        self.clock = clock
        self.publish = publish
        self.queue: DropOldestQueue[MotionFrame] = DropOldestQueue(queue_size)
        self.pipelines: dict[str, FacePipeline] = {}
        self.loop = StageLoop("faces", self.queue.get, self._step, beat or (lambda: None), on_error=self._failed)
        self.thread = self.loop.thread
        self.errors = 0
        self.inference_ms: float | None = None  # smoothed time per analysed frame (detect + track + embed)

    def submit(self, item: MotionFrame) -> None:
        with contextlib.suppress(Closed):
            self.queue.put(item)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.queue.close()
        self.loop.join(4.0)
        for p in self.pipelines.values():
            p.clear()

    def _pipeline(self, camera: str) -> FacePipeline:
        if camera not in self.pipelines:
            p = FacePipeline(camera, self.cfg, self.engine, self.gallery, self.clock)
            p.refresh_gallery(self.clock.monotonic(), force=True)
            self.pipelines[camera] = p
        return self.pipelines[camera]

    def _note_time(self, ms: float) -> None:
        # An exponential average: the state topic wants a steady figure, not the last frame's jitter.
        self.inference_ms = ms if self.inference_ms is None else 0.9 * self.inference_ms + 0.1 * ms

    def state(self) -> dict[str, Any]:
        return {"inference_ms": None if self.inference_ms is None else round(self.inference_ms, 2)}

    def _step(self, item: MotionFrame | None) -> None:
        mono = self.clock.monotonic()
        if item is None:
            for p in self.pipelines.values():
                p.tick(mono)
            return
        try:
            started = time.perf_counter()
            events = self._pipeline(item.frame.camera).process(item.frame)
            self._note_time(1000.0 * (time.perf_counter() - started))
            for ev in events:
                self.publish(ev)
        finally:
            for cam, p in self.pipelines.items():
                if cam != item.frame.camera:
                    p.tick(mono)

    def _failed(self, item: MotionFrame | None, _exc: Exception) -> None:
        # One bad frame must not stop recognition.
        self.errors += 1
        log.exception("face stage failed on frame %s", item.frame.seq if item is not None else None)


def build(config: Config, bus: EventBus, clock: Clock, host: Host) -> Feature | None:
    """The face stage as a daemon feature: loads the models once, consumes motion frames, publishes
    person/face events; None when faces are off."""
    if not config.faces.enabled:
        return None
    engine = FaceEngine.load(
        model=config.faces.model, threads=config.faces.threads, detector_score=config.faces.detector_score
    )
    gallery = Gallery(config.state_dir)  # gives people enrolled by an older version their ids
    migrate_at_start(gallery, engine, config.faces.unknown_distance)  # an older version's whole photos -> chips
    C.warn_at_start(gallery, C.today_of(clock.now()))
    stage = FaceStage(config.faces, engine, gallery, clock, bus.publish, beat=host.health.beater("faces"))
    return Feature(stage, on_motion=stage.submit, state=stage.state)
