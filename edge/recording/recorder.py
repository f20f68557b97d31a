"""The recording component of the daemon: the clip store, its writer lock, a recorder per camera (picamera2's
encoder for Pi cameras) and the retention sweeper."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from edge.camera.picamera2_encoder import Picamera2Encoder
from edge.clock import Clock
from edge.config import CameraConfig, Config, RecordingConfig
from edge.diskfaults import SpaceReserve
from edge.events.bus import Event, EventBus
from edge.recording.camera_recorder import FreeBytes, Recorder, RecorderStats, retention_policy
from edge.recording.codec import CodecChoice, FrameEncoder, make_encoder
from edge.recording.encoding import EncoderFactory, storage_mask
from edge.recording.store import ClipStore, WriterLock
from edge.recording.sweeper import RetentionSweeper
from edge.service.timesync import TimeKeeper
from edge.types import Frame

__all__ = ["Recorder", "RecorderStats", "Recording", "RetentionSweeper", "build", "picamera2_encoder_factory",
           "retention_policy", "storage_mask", "time_keeper"]

log = logging.getLogger(__name__)


def picamera2_encoder_factory(
    get_camera: Callable[[], Any], camera_config: CameraConfig, config: RecordingConfig, clock: Clock
) -> EncoderFactory:
    """An encoder factory for a picamera2 camera: the Pi's H.264 encoder on the main stream, masked in the
    camera's pre_callback. `get_camera` returns the open Picamera2 object (the source opens it later)."""

    def factory(
        codec: CodecChoice, width: int, height: int, fps: float, keyframe_interval_s: float, quality: str
    ) -> FrameEncoder:
        mask = storage_mask(camera_config.privacy_masks, height, width, config.mask_margin_px)
        return Picamera2Encoder(get_camera, mask, fps, keyframe_interval_s, quality, clock.now)

    return factory


class Recording:
    """Everything recording needs, as one daemon component: the store, its writer lock, one recorder per
    camera and the retention sweeper. start() recovers the store before anything records."""

    def __init__(
        self,
        config: Config,
        store: ClipStore,
        publish: Callable[[Event], Any] | None,
        clock: Clock,
        free_bytes: FreeBytes | None = None,
        encoder_factories: Mapping[str, EncoderFactory] | None = None,
        time_keeper: TimeKeeper | None = None,
    ) -> None:
        self.store = store
        # Watches the wall clock (jumps, sync, the grace period); the store consults it before deleting.
        guard = store.time_guard
        self.time_keeper = time_keeper or (guard if isinstance(guard, TimeKeeper) else None)
        self.lock: WriterLock = store.writer_lock()
        free = free_bytes or (lambda: shutil.disk_usage(store.root).free)
        factories = encoder_factories or {}
        self.recorders = {
            name: Recorder(
                name,
                cam,
                config.recording,
                config.retention,
                store,
                clock,
                publish,
                free,
                factories.get(name, make_encoder),
                self.time_keeper,
            )
            for name, cam in config.cameras.items()
            if config.recording.enabled  # disabled: no new clips, but retention still deletes old ones
        }
        self.sweeper = RetentionSweeper(store, config.retention, clock, free)
        self._publish = publish or (lambda _event: None)
        self.clock = clock
        self.problem: str | None = None  # what the owner must know about storage (also in the state summary)

    def start(self) -> None:
        if self.time_keeper is not None:
            self.time_keeper.start()  # the clock is checked against the saved mark before any sweep
        if self.store.readonly:
            # A read-only state dir: the daemon stays up (ring, events, MQTT), records nothing, says so.
            self.problem = f"state directory {self.store.state_dir} is read-only: nothing is recorded"
            self._report({"status": "storage_read_only", "error": self.problem})
            for recorder in self.recorders.values():
                recorder._pause(0, reason="read_only")
                recorder.start()
            return
        self.lock.acquire()
        report = self.store.recover()
        if report.recovered or report.removed or report.orphans or report.rebuilt:
            log.warning(
                "clip store recovered: %d truncated clips kept, %d removed, %d clips indexed again from their "
                "files, %d unknown files moved to %s",
                len(report.recovered),
                len(report.removed),
                len(report.rebuilt),
                len(report.orphans),
                report.quarantine,
            )
        if report.problem:
            self.problem = report.index_problem or f"{len(report.orphans)} unknown file(s) moved to quarantine"
            self._report(
                {
                    "status": "clip_index_recovered",
                    "error": report.index_problem,
                    "index_kept": str(report.index_kept) if report.index_kept else None,
                    "rebuilt": len(report.rebuilt),
                    "quarantined": len(report.orphans),
                    "quarantine": str(report.quarantine) if report.quarantine else None,
                    "holds_restored": list(report.holds_restored),
                }
            )
        SpaceReserve(self.store.state_dir).ensure()
        self.sweeper.sweep_once()
        self.sweeper.start()
        for recorder in self.recorders.values():
            recorder.start()

    def _report(self, fields: dict[str, Any]) -> None:
        log.error("storage: %s", self.problem)
        try:
            self._publish(Event("system", None, self.clock.now(), fields))
        except Exception:
            log.exception("cannot publish the storage problem")

    def stop(self) -> None:
        for recorder in self.recorders.values():
            recorder.stop()
        self.sweeper.stop()
        self.lock.release()
        if self.time_keeper is not None:
            self.time_keeper.stop()

    def on_frame(self, frame: Frame) -> None:
        recorder = self.recorders.get(frame.camera)
        if recorder is not None:
            recorder.on_frame(frame)

    def on_event(self, event: Event) -> None:
        recorder = self.recorders.get(event.camera or "")
        if recorder is not None:
            recorder.on_event(event)

    def attach_health(self, beater: Callable[[str], Callable[[], None]]) -> None:
        """Give each camera's recorder thread a heartbeat, so a wedged encoder stops the watchdog feed."""
        for name, recorder in self.recorders.items():
            recorder.beat = beater(f"recorder:{name}")

    def state(self) -> dict[str, Any]:
        """For the daemon's state summary: `recording` is the boolean MQTT publishes (a clip being written
        on any camera); `recorders` has the per-camera details."""
        return {
            "recording": any(r.recording for r in self.recorders.values()),
            "recorders": {name: r.state() for name, r in self.recorders.items()},
            "storage_problem": self.problem,
        }


def build(
    config: Config,
    bus: EventBus,
    clock: Clock,
    free_bytes: FreeBytes | None = None,
    pi_cameras: Mapping[str, Callable[[], Any]] | None = None,
) -> Recording:
    """The recording component for the daemon. The caller subscribes `on_event` to the bus, feeds every
    camera frame to `on_frame`, and starts/stops it with the other components. `pi_cameras` maps the
    picamera2 cameras to a getter of their open Picamera2 object, so their clips use the Pi's encoder."""
    factories = {
        name: picamera2_encoder_factory(getter, config.cameras[name], config.recording, clock)
        for name, getter in (pi_cameras or {}).items()
    }
    keeper = time_keeper(config, clock, bus.publish)
    store = ClipStore(config.state_dir, clock, keeper)
    return Recording(config, store, bus.publish, clock, free_bytes, factories, keeper)


def time_keeper(config: Config, clock: Clock, publish: Callable[[Event], Any]) -> TimeKeeper:
    """The daemon's clock watcher; what it has to say reaches the owner as `system` events (docs/time.md)."""

    def tell(status: str, fields: dict[str, Any]) -> None:
        publish(Event("system", None, clock.now(), {"status": status, **fields}))

    return TimeKeeper(
        config.state_dir,
        clock,
        jump_s=config.retention.clock_jump_s,
        grace_hours=config.retention.clock_grace_hours,
        trust=config.recording.clock_trust,
        publish=tell,
    )
