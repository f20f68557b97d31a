"""One camera's recorder: masked frames in, clips (pre-roll, events, snapshots) out, paused while the disk is short."""

from __future__ import annotations

import collections
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import cv2
import numpy as np

from edge.camera.masks import polygon_mask
from edge.clock import Clock
from edge.config import CameraConfig, RecordingConfig, RetentionConfig
from edge.diskfaults import SpaceReserve
from edge.errors import StorageError
from edge.events.bus import Event
from edge.queues import Closed, DropOldestQueue
from edge.recording.codec import CodecChoice, EncodedFrame, FrameEncoder, choose_codec, make_encoder
from edge.recording.preroll import PreRoll
from edge.recording.retention import RetentionPolicy
from edge.recording.snapshots import Snapshots
from edge.recording.store import ClipRef, ClipStore, ClipWriter
from edge.service.timesync import TimeKeeper
from edge.types import Frame, Image

log = logging.getLogger(__name__)

# Events reach the recorder after analysis; the ring keeps this much beyond the pre-roll so a late event
# still gets its full pre-roll.
EVENT_LATENCY_SLACK_S = 2.0
SNAPSHOT_CANDIDATES = 4  # recent masked frames kept to pick the one nearest an event's time
EVENTS_PER_TURN = 32  # trigger events handled between two heartbeats (a ring flood must not withhold the watchdog)
# Frame times come from the monotonic clock anchored to the wall clock (edge.clock.CaptureClock), so between
# two frames they advance exactly as the monotonic clock does, unless the camera re-anchored after a wall-clock
# step (> 2 s): a difference above this is such a step, and the clip ends there.
STEP_DETECT_S = 1.0
MiB = 1024 * 1024

EncoderFactory = Callable[[CodecChoice, int, int, float, float, str], FrameEncoder]
FreeBytes = Callable[[], int]


def retention_policy(config: RetentionConfig) -> RetentionPolicy:
    return RetentionPolicy(
        days={"motion": config.motion_days, "person": config.person_days, "ring": config.ring_days},
        max_bytes=config.max_usage_mb * MiB if config.max_usage_mb is not None else None,
        min_free_bytes=config.min_free_mb * MiB,
    )


def storage_mask(polygons: Sequence[Sequence[Sequence[float]]], height: int, width: int, margin_px: int) -> np.ndarray:
    """The privacy mask for stored footage: the configured polygons grown by `margin_px`, so the ringing of
    a lossy codec at the mask's edge lands in the margin, never inside the polygon itself."""
    mask = polygon_mask(polygons, height, width)
    if margin_px > 0 and mask.any():
        size = 2 * margin_px + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return mask


@dataclass
class RecorderStats:
    frames: int = 0
    dropped: int = 0  # frames dropped because the recorder thread fell behind
    clips: int = 0
    snapshots: int = 0
    paused: bool = False
    last_clip: str | None = None
    errors: list[str] = field(default_factory=list)


class Recorder:
    """One camera's recorder. on_frame/on_event never block (a bounded drop-oldest queue feeds a named thread);
    handle_frame/handle_event do the work and can be driven directly, frame by frame, in tests."""

    def __init__(
        self,
        camera: str,
        camera_config: CameraConfig,
        config: RecordingConfig,
        retention: RetentionConfig,
        store: ClipStore,
        clock: Clock,
        publish: Callable[[Event], Any] | None = None,
        free_bytes: FreeBytes | None = None,
        encoder_factory: EncoderFactory = make_encoder,
        time_keeper: TimeKeeper | None = None,
    ) -> None:
        self.camera = camera
        self.time_keeper = time_keeper  # None: every frame's time is trusted (tests without the daemon)
        self.camera_config = camera_config
        self.config = config
        self.store = store
        self.clock = clock
        self.policy = retention_policy(retention)
        self._publish = publish or (lambda _event: None)
        self._free_bytes = free_bytes or (lambda: shutil.disk_usage(store.root).free)
        # Kept free for the event journal and the audit log: recording stops before it is touched.
        self._reserve = SpaceReserve(store.state_dir)
        self._encoder_factory = encoder_factory
        self._codec = choose_codec(config.codec)
        self._pre = timedelta(seconds=config.pre_roll_s)
        self._post = timedelta(seconds=config.post_roll_s)
        self._max = timedelta(seconds=config.max_clip_s)
        self._triggers = set(config.triggers)
        self.stats = RecorderStats()

        self._frames: DropOldestQueue[Frame] = DropOldestQueue(config.queue_size)
        self._events: collections.deque[Event] = collections.deque()
        self.beat: Callable[[], None] = lambda: None  # the daemon's stage heartbeat (watchdog)
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._idle_lock = threading.Lock()

        self._encoder: FrameEncoder | None = None
        self._mask: np.ndarray | None = None
        self._preroll = PreRoll(self._pre, timedelta(seconds=EVENT_LATENCY_SLACK_S))
        self._snapshots = Snapshots(config.snapshot_quality)
        self._clip: ClipWriter | None = None
        self._clip_events: list[Event] = []
        self._want_clip = False  # an event came before any keyframe: start at the next one
        self._motion_active = False
        self._until: datetime | None = None
        self._paused = False
        self._missed: list[Event] = []  # triggers that arrived while paused
        self._next_disk_check = 0.0
        self._last_frame: tuple[datetime, float] | None = None  # (ts, mono) of the previous frame
        self._frame_trusted = True

    # -- the component ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"recorder:{self.camera}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._frames.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("recorder %s did not stop within %.1f s; its clip is left for recovery", self.camera, timeout)
                return
        self.close()

    def on_frame(self, frame: Frame) -> None:
        """Called on the camera thread for every frame; never blocks."""
        if frame.camera != self.camera:
            return
        with self._idle_lock:
            self._idle.clear()
            try:
                if not self._frames.put(frame):
                    self.stats.dropped += 1
            except Closed:
                return

    def on_event(self, event: Event) -> None:
        """A bus sink: only this camera's trigger events (and motion_end) matter."""
        if event.camera == self.camera and (event.type in self._triggers or event.type == "motion_end"):
            with self._idle_lock:
                self._idle.clear()
                self._events.append(event)

    def wait_idle(self, timeout: float) -> bool:
        """True once every queued frame and event has been handled (for tests and benchmarks)."""
        return self._idle.wait(timeout)

    def state(self) -> dict[str, Any]:
        return {
            "frames": self.stats.frames,
            "dropped": self.stats.dropped,
            "clips": self.stats.clips,
            "recording": self._clip is not None,
            "paused": self._paused,
        }

    def _run(self) -> None:
        while True:
            self.beat()
            try:
                frame = self._frames.get(timeout=0.2)
            except Closed:
                break
            try:
                # A bounded batch per turn: a flood of trigger events must not starve the heartbeat (the watchdog)
                # or the frames; what is left waits for the next turn.
                for _ in range(min(len(self._events), EVENTS_PER_TURN)):
                    self.handle_event(self._events.popleft())
                if frame is not None:
                    self.handle_frame(frame)
                else:
                    self._maybe_check_disk()
            except Exception:
                log.exception("recorder %s failed on a frame; continuing", self.camera)
            with self._idle_lock:  # atomic with on_frame's clear-and-put: idle never hides a queued frame
                if len(self._frames) == 0 and not self._events:
                    self._idle.set()
        while self._events:
            self.handle_event(self._events.popleft())
        self._idle.set()

    def close(self) -> ClipRef | None:
        """Finish the clip in progress and release the encoder (the thread has stopped)."""
        ref = self._finish_clip()
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None
        return ref

    # -- the work --------------------------------------------------------------------------------------------

    def handle_event(self, event: Event) -> None:
        if event.camera != self.camera:
            return
        if event.type == "motion_end":
            self._motion_active = False
            self._extend(event.ts + self._post)
            if self._clip is not None:
                self._clip.add_event(event.id, event.type, event.ts)
            return
        if event.type not in self._triggers:
            return
        if event.type == "motion_start":
            self._motion_active = True
        self._extend(event.ts + self._post)
        if not self.config.enabled:
            return
        if self._paused:
            log.warning("recording paused (disk full): event %s on %s not recorded", event.id, self.camera)
            self._missed.append(event)
            return
        if self._clip is None:
            self._start_clip(event.ts)
            if self._paused:  # the disk check before starting the clip paused recording
                self._missed.append(event)
                return
        self._clip_events.append(event)
        if self._clip is not None:
            self._clip.add_event(event.id, event.type, event.ts)
        if self.config.snapshots:
            self._snapshots.want(event)
            self._serve_snapshots(final=False)

    def handle_frame(self, frame: Frame) -> None:
        if frame.camera != self.camera:
            return
        self.stats.frames += 1
        if self._last_frame is not None:
            last_ts, last_mono = self._last_frame
            step = (frame.ts - last_ts).total_seconds() - (frame.mono - last_mono)
            if abs(step) > STEP_DETECT_S:
                self._clock_stepped(step, frame.ts)
        self._last_frame = (frame.ts, frame.mono)
        keeper = self.time_keeper
        self._frame_trusted = keeper.frame_trusted(frame.ts) if keeper is not None else True
        image = self._masked(frame.image)
        encoder = self._encoder_for(image)
        self._snapshots.add_frame(frame.ts, image)
        self._serve_snapshots(final=False)
        for packet in encoder.encode(image, frame.ts, frame.mono):
            self._route(packet)
        if not self._frame_trusted and self._clip is not None:
            self._clip.mark_untrusted()
        self._maybe_check_disk()

    def _clock_stepped(self, step: float, ts: datetime) -> None:
        """The wall clock stepped by `step` seconds: end the clip (its times stay true), drop pre-roll stamped
        in the old time base, move pending deadlines into the new one, and go on in a new clip at the next
        keyframe when activity continues. Nothing is squeezed into a false range."""
        clip = self._clip
        carried = list(self._clip_events)
        active = clip is not None or self._want_clip
        ended = self._finish_clip()
        self._preroll.clear()
        self._snapshots.clear_frames()
        if self._until is not None:
            self._until += timedelta(seconds=step)
        if active and self.config.enabled and not self._paused:
            self._clip_events = carried
            self._want_clip = True
            if self._encoder is not None:
                self._encoder.request_keyframe()
        log.warning(
            "camera %s: the wall clock stepped %+.3f s; clip %s ended there%s",
            self.camera,
            step,
            ended.id if ended else (clip.id if clip else "-"),
            ", recording goes on in a new clip" if self._want_clip else "",
        )
        self._publish(
            Event(
                "system",
                self.camera,
                ts,
                {
                    "status": "clock_step",
                    "seconds": round(step, 3),
                    "clip_ended": ended.id if ended else (clip.id if clip else None),
                    "continues": self._want_clip,
                },
            )
        )
        if self.time_keeper is not None:
            self.time_keeper.check()

    def _masked(self, image: Image) -> Image:
        height, width = image.shape[:2]
        if not self.camera_config.privacy_masks:
            return image
        if self._mask is None or self._mask.shape != (height, width):
            margin = self.config.mask_margin_px
            self._mask = storage_mask(self.camera_config.privacy_masks, height, width, margin) > 0
        # Applied here even though the camera stage masks at the source: nothing unmasked may be stored.
        out = image.copy()
        out[self._mask] = 0
        return out

    def _encoder_for(self, image: Image) -> FrameEncoder:
        height, width = image.shape[:2]
        if self._encoder is not None and (self._encoder.width, self._encoder.height) == (width, height):
            return self._encoder
        if self._encoder is not None:
            log.warning("camera %s changed size to %dx%d; restarting the encoder", self.camera, width, height)
            self._finish_clip()
            self._encoder.close()
            self._preroll.clear()
        fps = self.camera_config.fps
        self._encoder = self._encoder_factory(
            self._codec, width, height, fps, self.config.keyframe_interval_s, self.config.quality
        )
        return self._encoder

    def _route(self, packet: EncodedFrame) -> None:
        clip = self._clip
        if clip is not None and not self._motion_active and self._until is not None and packet.ts >= self._until:
            self._finish_clip()
        elif clip is not None and packet.keyframe and clip.first_ts and packet.ts - clip.first_ts >= self._max:
            # Roll over at a keyframe: the next clip starts with this frame, so nothing is lost in between.
            log.info("clip %s reached max_clip_s; continuing in a new clip", clip.id)
            carried = list(self._clip_events)
            self._finish_clip()
            if self._begin(packet.ts):
                for event in carried:
                    self._note_event(event)
        if self._want_clip and packet.keyframe and self._clip is None:
            self._want_clip = False
            waiting = list(self._clip_events)
            if self._begin(packet.ts):
                for event in waiting:
                    self._note_event(event)
        if self._clip is not None:
            self._write(packet)
        self._preroll.add(packet)

    def _extend(self, until: datetime) -> None:
        if self._until is None or until > self._until:
            self._until = until

    def _start_clip(self, trigger_ts: datetime) -> None:
        if self._disk_low():
            return
        frames = self._preroll.since(trigger_ts)
        if frames is None:  # no keyframe yet: the clip starts at the next one
            self._want_clip = True
            if self._encoder is not None:
                self._encoder.request_keyframe()
            return
        if not self._begin(frames[0].ts):
            return
        for packet in frames:
            self._write(packet)

    def _begin(self, start_ts: datetime) -> bool:
        encoder = self._encoder
        if encoder is None:
            return False
        try:
            self._clip = self.store.begin(
                self.camera, start_ts, encoder.codec, encoder.width, encoder.height, trusted=self._frame_trusted
            )
        except StorageError as exc:
            self._fail(f"cannot start a clip: {exc}")
            return False
        self._clip_events = []
        log.info("clip %s started on %s", self._clip.id, self.camera)
        return True

    def _note_event(self, event: Event) -> None:
        self._clip_events.append(event)
        if self._clip is not None:
            self._clip.add_event(event.id, event.type, event.ts)

    def _write(self, packet: EncodedFrame) -> None:
        if self._clip is None:
            return
        try:
            self._clip.write(packet)
        except StorageError as exc:
            self._fail(str(exc))

    def _finish_clip(self, truncated: bool = False) -> ClipRef | None:
        clip, self._clip = self._clip, None
        self._clip_events = []
        self._want_clip = False
        self._serve_snapshots(final=True, clip=clip)
        if clip is None:
            return None
        try:
            ref = clip.finish(truncated=truncated)
        except Exception as exc:  # a clip that cannot be finished now is recovered at the next start
            log.error("clip %s could not be finished (%s); left for recovery at the next start", clip.id, exc)
            clip.abandon()
            return None
        if ref is not None:
            self.stats.clips += 1
            self.stats.last_clip = ref.id
        return ref

    def _fail(self, message: str) -> None:
        """A write failed: keep what was recorded, then pause until the disk check says space is back."""
        log.error("recording on %s failed: %s", self.camera, message)
        self.stats.errors = [*self.stats.errors[-19:], message]
        self._finish_clip(truncated=True)
        self._pause(self._free_bytes(), reason="write_error")

    # -- snapshots -------------------------------------------------------------------------------------------

    def _serve_snapshots(self, final: bool, clip: ClipWriter | None = None) -> None:
        self.stats.snapshots += self._snapshots.serve(final, clip or self._clip)

    # -- disk space ------------------------------------------------------------------------------------------

    def _maybe_check_disk(self) -> None:
        now = self.clock.monotonic()
        if now >= self._next_disk_check:
            self._next_disk_check = now + self.config.disk_check_s
            self._disk_low()

    def _disk_low(self) -> bool:
        """Check free space (sweeping old clips when short); pause or resume recording. True when paused.
        Recording also stays paused while the space reserve (for the journal and the audit log) is used up
        and there is no room to make it again."""
        if self.store.readonly:
            if not self._paused:
                self._pause(0, reason="read_only")
            return True
        free = self._free_bytes()
        if free < self.policy.min_free_bytes:
            report = self.store.apply_retention(self.policy, free)
            if report.deleted:
                log.info("freed space: deleted %d clips", len(report.deleted))
            free = self._free_bytes()
        if free < self.policy.min_free_bytes or not self._reserve_ready(free):
            if not self._paused:
                self._finish_clip()
                self._pause(free, reason="disk_full")
        elif self._paused:
            self._paused = False
            self.stats.paused = False
            log.warning("recording on %s resumed: %d MiB free", self.camera, free // MiB)
            self._publish(
                Event("system", self.camera, self.clock.now(), {"status": "recording_resumed", "free_bytes": free})
            )
            self._resume_activity()
        return self._paused

    def _reserve_ready(self, free: int) -> bool:
        if self._reserve.present():
            return True
        return free >= self.policy.min_free_bytes + self._reserve.size and self._reserve.ensure()

    def _resume_activity(self) -> None:
        """Activity still going on when space came back gets a clip at once (with what pre-roll there is)."""
        missed, self._missed = self._missed, []
        latest = self._snapshots.latest
        if self._clip is not None or latest is None:
            return
        if not (self._motion_active or (self._until is not None and self._until > latest)):
            return
        self._start_clip(latest)
        for event in missed:
            self._note_event(event)

    def _pause(self, free: int, reason: str) -> None:
        if self._paused:
            return
        self._paused = True
        self.stats.paused = True
        self._next_disk_check = self.clock.monotonic() + self.config.disk_check_s
        # The space reserve kept for events and the audit log counts as needed until it exists again.
        reserve = self._reserve.present() or self.store.readonly
        needed = self.policy.min_free_bytes + (0 if reserve else self._reserve.size)
        log.warning(
            "recording on %s paused (%s): %d MiB free, %d MiB needed%s; held clips cannot be deleted",
            self.camera,
            reason,
            free // MiB,
            needed // MiB,
            "" if reserve else " (the space reserve for events was used up)",
        )
        self._publish(
            Event(
                "system",
                self.camera,
                self.clock.now(),
                {
                    "status": "recording_paused",
                    "reason": reason,
                    "free_bytes": free,
                    "min_free_bytes": self.policy.min_free_bytes,
                    "reserve_used": not reserve,
                },
            )
        )

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def recording(self) -> bool:
        return self._clip is not None


