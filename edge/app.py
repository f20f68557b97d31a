"""Builds the daemon from config, starts its stages in order, feeds systemd, and stops them in reverse."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edge import __version__
from edge.camera.base import make_source
from edge.camera.stage import CameraStage
from edge.clock import Clock, SystemClock
from edge.config import Config
from edge.diskfaults import is_read_only
from edge.errors import StorageError
from edge.events.bus import Event, EventBus
from edge.motion.stage import MotionStage
from edge.permissions import make_state_private
from edge.queues import Closed, DropOldestQueue
from edge.ratelimit import RateLimiter
from edge.service import housekeeping
from edge.service.button import GpioButton
from edge.service.control import ControlServer, rate_limited
from edge.service.health import Health
from edge.service.housekeeping import Housekeeping
from edge.service.logging import setup_logging
from edge.service.memory import tune_malloc
from edge.service.notify import Notifier
from edge.service.preflight import check_modules
from edge.service.snapshots import LatestFrames
from edge.stage import Component, Feature, FeatureBuilder, Host
from edge.types import Frame, MotionFrame

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 4.0  # SIGTERM must end the process with exit 0 within 5 s


def _mqtt(config: Config, bus: EventBus, clock: Clock, host: Host) -> Feature:
    """The event journal becomes the bus's journal (seq shared with CLI processes); the publisher starts before
    and stops after everything that emits events."""
    from edge.mqtt.service import build

    return Feature(build(config, bus, clock, host.state, host.snapshot))


def _faces(config: Config, bus: EventBus, clock: Clock, host: Host) -> Feature | None:
    from edge.vision.pipeline import build

    return build(config, bus, clock, host)


def _recording(config: Config, bus: EventBus, clock: Clock, host: Host) -> Feature:
    """Started before the cameras (its start() recovers the clip store), stopped after them. Built even with
    recording.enabled false: it then records nothing, but retention keeps deleting old clips."""
    from edge.recording.recorder import build

    pi_cameras = {
        name: lambda name=name: host.camera_handle(name)
        for name, cam in config.cameras.items()
        if cam.source == "picamera2" and config.recording.pi_encoder
    }
    recording = build(config, bus, clock, pi_cameras=pi_cameras)
    recording.attach_health(host.health.beater)
    return Feature(recording, on_frame=recording.on_frame, on_event=recording.on_event, state=recording.state)


def _web(config: Config, bus: EventBus, clock: Clock, host: Host) -> Feature | None:
    """The owner's page (web.enabled): one thread, started after the other features, stopped before them; a
    crash of the page is logged and the page restarted without touching capture or MQTT (edge/web/server.py)."""
    if not config.web.enabled:
        return None
    from edge.web.server import WebServer

    return Feature(WebServer(config, clock, host.snapshot, bus.publish))


# Started in this order (after the snapshot keeper), stopped in reverse; each may also join the flows.
FEATURES: tuple[FeatureBuilder, ...] = (_mqtt, _faces, _recording, housekeeping.build, _web)


class StdoutSink:
    """Every event as one JSON line on stdout, flushed at once so pipes see it live."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), separators=(",", ":"), sort_keys=False)
        with self.lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # a closed stdout must never stop the doorbell


def ensure_state_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise StorageError(
            f"cannot create state directory {path}: {exc} (set storage.state_dir or DOORBELL_EDGE_STATE_DIR)"
        ) from exc
    if not os.access(path, os.W_OK):
        raise StorageError(f"state directory {path} is not writable (set storage.state_dir or DOORBELL_EDGE_STATE_DIR)")
    return path


class App:
    """The daemon: cameras -> motion gate -> inference consumers, events -> journal -> sinks."""

    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        stdout: TextIO | None = None,
        environ: dict[str, str] | None = None,
        features: tuple[FeatureBuilder, ...] = FEATURES,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.stdout = stdout or sys.stdout
        self.environ = dict(os.environ if environ is None else environ)
        self.feature_builders = features
        self.bus = EventBus()
        self.health = Health(config.pipeline.stall_after_s, self.clock.monotonic)
        self.notifier = Notifier(self.environ)
        self.stop_event = threading.Event()
        self.exit_status = 0  # 1 when a camera stage crashed (systemd restarts on failure), else 0
        self.cameras: dict[str, CameraStage] = {}
        self.motion: dict[str, MotionStage] = {}
        self.latest = LatestFrames(config.button.camera or next(iter(config.cameras)))
        self.features: list[Feature] = []  # built by build(); started in order, stopped in reverse
        self.control_handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self._watchdog_thread: threading.Thread | None = None
        self.storage_problem: str | None = None  # the state dir is read-only: running degraded (build())
        self._started_mono = self.clock.monotonic()

    # --- building ----------------------------------------------------------------------------------------

    def build(self) -> App:
        self._prepare_state_dir()
        if self.config.output.stdout_events:
            self.bus.subscribe(StdoutSink(self.stdout))
        host = Host(self.health, self.state, self.snapshot_jpeg, self._camera_handle)
        self.features.append(Feature(self.latest, on_frame=self.latest.on_frame))
        for builder in self.feature_builders:
            feature = builder(self.config, self.bus, self.clock, host)
            if feature is not None:
                self.features.append(feature)
                if feature.on_event is not None:
                    self.bus.subscribe(feature.on_event)
        for name in self.config.cameras:
            self._build_camera(name)
        self.features.extend(Feature(c) for c in self._build_controls())
        return self

    def _prepare_state_dir(self) -> None:
        try:
            ensure_state_dir(self.config.state_dir)
            # Migration: files an older version (UMask=0027) or a root-run tool left group- or world-readable
            # become the service user's alone; only the control socket stays open to the group.
            make_state_private(self.config.state_dir)
        except StorageError as exc:
            if not (self.config.state_dir.is_dir() and is_read_only(self.config.state_dir)):
                raise
            # A read-only state dir (an SD card the kernel remounted ro) must not become a restart loop: the
            # daemon runs on (ring, events, MQTT), records nothing, and says so (log, `system` event, state).
            self.storage_problem = f"{exc}: the daemon runs without recording, and events are not durable"
            log.error("%s", self.storage_problem)

    def _build_camera(self, name: str) -> None:
        """camera -> (every frame consumer, the motion queue) -> motion gate -> every motion consumer."""
        cam_config = self.config.cameras[name]
        queue: DropOldestQueue[Frame] = DropOldestQueue(self.config.pipeline.queue_size)
        frame_consumers = [f.on_frame for f in self.features if f.on_frame is not None]
        motion_consumers = [f.on_motion for f in self.features if f.on_motion is not None]

        def emit(frame: Frame) -> None:
            try:
                queue.put(frame)
            except Closed:
                return
            for consumer in frame_consumers:
                consumer(frame)

        def forward(item: MotionFrame) -> None:
            for consumer in motion_consumers:
                consumer(item)

        self.cameras[name] = CameraStage(
            name, cam_config, make_source(name, cam_config), emit, self.clock,
            beat=self.health.beater(f"camera:{name}"), report=self._reporter(name),
        )
        self.motion[name] = MotionStage(
            name, cam_config, self.config.motion, queue, self.bus.publish, forward, self.clock,
            beat=self.health.beater(f"motion:{name}"),
        )

    def _build_controls(self) -> list[Component]:
        """The ways to ring (button, control socket) and the socket's status command."""
        first_camera = next(iter(self.config.cameras))
        ring_camera = self.config.button.camera or first_camera
        # One ring limit per camera for every way of ringing (button, control socket): a flood is one ring per
        # button.ring_interval_s, and the refused presses are answered "rate limited".
        limiter = RateLimiter("ring on {key}", self.config.button.ring_interval_s, self.config.cameras,
                                        self.clock.monotonic, "button.ring_interval_s")
        button = GpioButton(self.config.button, lambda: self.ring(ring_camera, "button"), self.clock.monotonic,
                            limiter=limiter, camera=ring_camera)
        self.control_handlers["ring"] = rate_limited(
            self._handle_ring, limiter, lambda request: str(request.get("camera") or first_camera)
        )
        self.control_handlers["status"] = lambda _req: {"ok": True, "state": self.state()}
        return [button, ControlServer(self.config.state_dir, self.control_handlers, self.config.control)]

    def _camera_handle(self, name: str) -> Any:
        """The open Picamera2 object of a picamera2 camera (None before its source opened it)."""
        return getattr(getattr(self.cameras.get(name), "source", None), "camera", None)

    def _reporter(self, camera: str) -> Callable[[str, dict[str, object]], None]:
        def report(what: str, details: dict[str, object]) -> None:
            self.bus.publish(Event("system", camera, self.clock.now(), {"status": what, **details}))

        return report

    def snapshot_jpeg(self, camera: str | None = None) -> bytes | None:
        """The newest frame of a camera (default: the doorbell's) as JPEG; privacy masks are already applied."""
        return self.latest.jpeg(camera)

    def _housekeeping(self) -> Housekeeping:
        return next(f.component for f in self.features if isinstance(f.component, Housekeeping))

    def housekeeping(self) -> None:
        """Periodic chores that must happen even when nobody runs a command (edge/service/housekeeping.py)."""
        self._housekeeping().run_once()

    def check_state_readable(self) -> None:
        self._housekeeping().check_state_readable()

    # --- actions -----------------------------------------------------------------------------------------

    def ring(self, camera: str, source: str) -> Event:
        log.info("ring on %s (%s)", camera, source)
        return self.bus.publish(Event("ring", camera, self.clock.now(), {"source": source}))

    def _handle_ring(self, request: dict[str, Any]) -> dict[str, Any]:
        camera = request.get("camera") or next(iter(self.config.cameras))
        if camera not in self.config.cameras:
            return {"ok": False, "error": f"no camera named {camera!r}"}
        event = self.ring(str(camera), "cli")
        return {"ok": True, "event_id": event.id, "seq": event.seq}

    def state(self) -> dict[str, Any]:
        uptime = max(self.clock.monotonic() - self._started_mono, 1e-6)
        fps = [stage.frames / uptime for stage in self.cameras.values()]
        state: dict[str, Any] = {
            "motion": any(stage.active for stage in self.motion.values()),
            "fps": round(sum(fps) / len(fps), 2) if fps else 0.0,
            "cameras": {
                name: {
                    "fps": round(stage.frames / uptime, 2),
                    "frames": stage.frames,
                    "motion": self.motion[name].active,
                    "reconnects": stage.reconnects,
                }
                for name, stage in self.cameras.items()
            },
            "stalled": self.health.stalled(),
        }
        for feature in self.features:
            if feature.state is not None:
                state.update(feature.state())
        return state

    # --- running -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._started_mono = self.clock.monotonic()
        for feature in self.features:
            try:
                feature.component.start()
            except (StorageError, OSError) as exc:
                if self.storage_problem is None:
                    raise
                log.error("%s cannot start on the read-only state dir (%s); running without it",
                          type(feature.component).__name__, exc)
        for motion in self.motion.values():
            motion.start()
        for camera in self.cameras.values():
            camera.start()
        self.bus.publish(Event("system", None, self.clock.now(), {"status": "started", "version": __version__}))
        self.notifier.ready(self._status_line())
        self._watchdog_thread = threading.Thread(target=self._watchdog_loop, name="watchdog", daemon=True)
        self._watchdog_thread.start()
        log.info("doorbell-edge %s running: cameras %s", __version__, ", ".join(self.cameras))

    def _status_line(self) -> str:
        parts = [f"{name} {info['fps']:.1f} fps" for name, info in self.state()["cameras"].items()]
        stalled = self.health.stalled()
        return "; ".join(parts) + (f"; STALLED: {', '.join(stalled)}" if stalled else "")

    def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s or 5.0
        interval = min(interval, 5.0)
        while not self.stop_event.wait(interval):
            stalled = self.health.stalled()
            if stalled:
                # Not feeding the watchdog lets systemd restart us: a stuck stage must not look healthy.
                log.error("stages stalled: %s; withholding the watchdog", ", ".join(stalled))
            elif self.notifier.watchdog_interval_s is not None:
                self.notifier.watchdog()
            self.notifier.status(self._status_line())

    def wait(self, duration: float | None = None) -> None:
        deadline = None if duration is None else self.clock.monotonic() + duration
        while not self.stop_event.is_set():
            if deadline is not None and self.clock.monotonic() >= deadline:
                break
            if self.cameras and all(stage.ended.is_set() for stage in self.cameras.values()):
                crashed = [name for name, stage in self.cameras.items() if stage.loop.failed is not None]
                if crashed:  # not the end of a file: exit non-zero so systemd's Restart=on-failure starts us again
                    log.error("camera stage(s) %s crashed; stopping with exit status 1", ", ".join(crashed))
                    self.exit_status = 1
                else:
                    log.info("every camera source has ended; stopping")
                break
            self.stop_event.wait(0.2)

    def stop(self) -> None:
        self.stop_event.set()
        self.notifier.stopping()
        share = STOP_TIMEOUT_S / 3
        for camera in self.cameras.values():
            camera.stop()
        for camera in self.cameras.values():
            camera.join(share / max(1, len(self.cameras)))
        for motion in self.motion.values():
            motion.stop()  # closes its queue: the frames in it are still scored
        for motion in self.motion.values():
            motion.join(share / max(1, len(self.motion)))
        self.bus.publish(Event("system", None, self.clock.now(), {"status": "stopping"}))
        for feature in reversed(self.features):
            try:
                feature.component.stop()
            except Exception:
                log.exception("stopping %r failed", feature.component)
        self.notifier.close()


def run_daemon(config: Config, duration: float | None = None) -> int:
    setup_logging(config.output.log_level)
    check_modules(config)  # a missing optional module is exit 78 before anything starts, never a traceback
    tune_malloc()
    app = App(config).build()
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop_requested.set()
        app.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.start()
    try:
        app.wait(duration)
    finally:
        app.stop()
    return app.exit_status
