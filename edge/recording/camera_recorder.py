"""One camera's recorder: masked frames in, clips (pre-roll, events, snapshots) out, paused while the disk is short."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edge.clock import Clock
from edge.config import CameraConfig, RecordingConfig, RetentionConfig
from edge.errors import StorageError
from edge.events.bus import Event
from edge.recording.codec import EncodedFrame, FrameEncoder, make_encoder
from edge.recording.encoding import EncoderFactory, StorageEncoder
from edge.recording.inbox import RecorderInbox
from edge.recording.preroll import PreRoll
from edge.recording.retention import RetentionPolicy
from edge.recording.snapshots import Snapshots
from edge.recording.space import DiskGuard, MiB
from edge.recording.store import ClipRef, ClipStore, ClipWriter
from edge.service.timesync import TimeKeeper
from edge.types import Frame, Image

log = logging.getLogger(__name__)

# Events reach the recorder after analysis; the ring keeps this much beyond the pre-roll so a late event
# still gets its full pre-roll.
EVENT_LATENCY_SLACK_S = 2.0
# Frame times come from the monotonic clock anchored to the wall clock (edge.clock.CaptureClock), so between
# two frames they advance exactly as the monotonic clock does, unless the camera re-anchored after a wall-clock
# step (> 2 s): a difference above this is such a step, and the clip ends there.
STEP_DETECT_S = 1.0

FreeBytes = Callable[[], int]


def retention_policy(config: RetentionConfig) -> RetentionPolicy:
    return RetentionPolicy(
        days={"motion": config.motion_days, "person": config.person_days, "ring": config.ring_days},
        max_bytes=config.max_usage_mb * MiB if config.max_usage_mb is not None else None,
        min_free_bytes=config.min_free_mb * MiB,
    )


@dataclass
class RecorderStats:
    frames: int = 0
    dropped: int = 0  # frames dropped because the recorder thread fell behind
    clips: int = 0
    snapshots: int = 0
    paused: bool = False
    last_clip: str | None = None
    errors: list[str] = field(default_factory=list)


class Recorder(RecorderInbox):
    """One camera's recorder. on_frame/on_event never block (a bounded drop-oldest queue feeds a named thread:
    edge.recording.inbox); handle_frame/handle_event do the work and can be driven directly, frame by frame, in
    tests."""

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
        super().__init__(camera, config.queue_size)
        self.time_keeper = time_keeper  # None: every frame's time is trusted (tests without the daemon)
        self.camera_config = camera_config
        self.config = config
        self.store = store
        self.clock = clock
        self.policy = retention_policy(retention)
        self._publish = publish or (lambda _event: None)
        self._disk = DiskGuard(camera, store, self.policy, clock, self._publish,
                               free_bytes or (lambda: shutil.disk_usage(store.root).free), config.disk_check_s)
        self._encoding = StorageEncoder(camera_config, config, encoder_factory)
        self._pre = timedelta(seconds=config.pre_roll_s)
        self._post = timedelta(seconds=config.post_roll_s)
        self._max = timedelta(seconds=config.max_clip_s)
        self._triggers = set(config.triggers)
        self.stats = RecorderStats()

        self._preroll = PreRoll(self._pre, timedelta(seconds=EVENT_LATENCY_SLACK_S))
        self._snapshots = Snapshots(config.snapshot_quality)
        self._clip: ClipWriter | None = None
        self._clip_events: list[Event] = []
        self._want_clip = False  # an event came before any keyframe: start at the next one
        self._motion_active = False
        self._until: datetime | None = None
        self._missed: list[Event] = []  # triggers that arrived while paused
        self._last_frame: tuple[datetime, float] | None = None  # (ts, mono) of the previous frame
        self._frame_trusted = True

    # -- the component (the thread is edge.recording.inbox's) ------------------------------------------------

    def wants(self, event: Event) -> bool:
        """Only this camera's trigger events (and motion_end) matter."""
        return event.camera == self.camera and (event.type in self._triggers or event.type == "motion_end")

    def idle(self) -> None:
        self._maybe_check_disk()

    def frame_dropped(self) -> None:
        self.stats.dropped += 1

    def state(self) -> dict[str, Any]:
        return {"frames": self.stats.frames, "dropped": self.stats.dropped, "clips": self.stats.clips,
                "recording": self._clip is not None, "paused": self.paused}

    def close(self) -> ClipRef | None:
        """Finish the clip in progress and release the encoder (the thread has stopped)."""
        ref = self._finish_clip()
        self._encoding.close()
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
        if self.paused:
            log.warning("recording paused (disk full): event %s on %s not recorded", event.id, self.camera)
            self._missed.append(event)
            return
        if self._clip is None:
            self._start_clip(event.ts)
            if self.paused:  # the disk check before starting the clip paused recording
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
        image = self._encoding.masked(frame.image)
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
        if active and self.config.enabled and not self.paused:
            self._clip_events = carried
            self._want_clip = True
            self._encoding.request_keyframe()
        ended_id = ended.id if ended else (clip.id if clip else None)
        log.warning("camera %s: the wall clock stepped %+.3f s; clip %s ended there%s", self.camera, step,
                    ended_id or "-", ", recording goes on in a new clip" if self._want_clip else "")
        self._publish(Event("system", self.camera, ts, {"status": "clock_step", "seconds": round(step, 3),
                                                        "clip_ended": ended_id, "continues": self._want_clip}))
        if self.time_keeper is not None:
            self.time_keeper.check()

    def _encoder_for(self, image: Image) -> FrameEncoder:
        if not self._encoding.fits(image):
            if self._encoding.encoder is not None:  # the camera changed size: this clip ends, a new one follows
                log.warning("camera %s changed size to %dx%d; restarting the encoder", self.camera, *image.shape[1::-1])
                self._finish_clip()
                self._preroll.clear()
            return self._encoding.make(image)
        assert self._encoding.encoder is not None
        return self._encoding.encoder

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
            self._encoding.request_keyframe()
            return
        if not self._begin(frames[0].ts):
            return
        for packet in frames:
            self._write(packet)

    def _begin(self, start_ts: datetime) -> bool:
        encoder = self._encoding.encoder
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
        self._pause(self._disk.free_bytes(), reason="write_error")

    # -- snapshots -------------------------------------------------------------------------------------------

    def _serve_snapshots(self, final: bool, clip: ClipWriter | None = None) -> None:
        self.stats.snapshots += self._snapshots.serve(final, clip or self._clip)

    # -- disk space ------------------------------------------------------------------------------------------

    def _maybe_check_disk(self) -> None:
        if self._disk.due():
            self._disk_low()

    def _disk_low(self) -> bool:
        """Check free space (edge.recording.space); pause or resume recording. True when paused."""
        why, free = self._disk.assess()
        if why is not None:
            if not self._disk.paused and why == "disk_full":
                self._finish_clip()
            self._pause(free, why)
            return True
        if self._disk.paused:
            self._disk.resume(free)
            self.stats.paused = False
            self._resume_activity()
        return False

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
        self._disk.pause(free, reason)
        self.stats.paused = True

    @property
    def paused(self) -> bool:
        return self._disk.paused

    @property
    def recording(self) -> bool:
        return self._clip is not None


