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
from typing import Any, Protocol, TextIO

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
from edge.recording.codec import encode_jpeg
from edge.service.button import GpioButton
from edge.service.control import ControlServer, rate_limited
from edge.service.health import Health
from edge.service.logging import setup_logging
from edge.service.memory import tune_malloc
from edge.service.notify import Notifier
from edge.service.preflight import check_modules
from edge.types import Frame, MotionFrame

log = logging.getLogger(__name__)

SNAPSHOT_JPEG_QUALITY = 85
STOP_TIMEOUT_S = 4.0  # SIGTERM must end the process with exit 0 within 5 s


class Component(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


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
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.stdout = stdout or sys.stdout
        self.environ = dict(os.environ if environ is None else environ)
        self.bus = EventBus()
        self.health = Health(config.pipeline.stall_after_s, self.clock.monotonic)
        self.notifier = Notifier(self.environ)
        self.stop_event = threading.Event()
        self.cameras: dict[str, CameraStage] = {}
        self.motion: dict[str, MotionStage] = {}
        # Integration points, filled by build():
        self.components: list[Component] = []  # started in order, stopped in reverse
        self.frame_consumers: dict[str, list[Callable[[Frame], None]]] = {n: [] for n in config.cameras}
        self.motion_consumers: list[Callable[[MotionFrame], None]] = []
        self.state_providers: list[Callable[[], dict[str, Any]]] = []
        self.control_handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self._watchdog_thread: threading.Thread | None = None
        self._pending_requests = 0
        self._state_problems: dict[str, str] = {}  # what -> the reason it cannot be read (check_state_readable)
        self.storage_problem: str | None = None  # the state dir is read-only: running degraded (build())
        self._latest: dict[str, Frame] = {}
        self._started_mono = self.clock.monotonic()

    # --- building ----------------------------------------------------------------------------------------

    def build(self) -> App:
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
        if self.config.output.stdout_events:
            self.bus.subscribe(StdoutSink(self.stdout))
        self._build_features()
        for name, cam_config in self.config.cameras.items():
            queue: DropOldestQueue[Frame] = DropOldestQueue(self.config.pipeline.queue_size)
            consumers = self.frame_consumers[name]

            def emit(frame: Frame, queue: DropOldestQueue[Frame] = queue, consumers=consumers) -> None:
                try:
                    queue.put(frame)
                except Closed:
                    return
                for consumer in consumers:
                    consumer(frame)

            self.cameras[name] = CameraStage(
                name,
                cam_config,
                make_source(name, cam_config),
                emit,
                self.clock,
                beat=self._beater(f"camera:{name}"),
                report=self._reporter(name),
            )
            self.motion[name] = MotionStage(
                name,
                cam_config,
                self.config.motion,
                queue,
                self.bus.publish,
                self._forward_motion,
                self.clock,
                beat=self._beater(f"motion:{name}"),
            )
        first_camera = next(iter(self.config.cameras))
        ring_camera = self.config.button.camera or first_camera
        # One ring limit per camera for every way of ringing (button, control socket): a flood is one ring per
        # button.ring_interval_s, and the refused presses are answered "rate limited".
        self.ring_limiter = RateLimiter("ring on {key}", self.config.button.ring_interval_s, self.config.cameras,
                                        self.clock.monotonic, "button.ring_interval_s")
        self.components.append(
            GpioButton(self.config.button, lambda: self.ring(ring_camera, "button"), self.clock.monotonic,
                       limiter=self.ring_limiter, camera=ring_camera)
        )
        self.control_handlers["ring"] = rate_limited(
            self._handle_ring, self.ring_limiter, lambda request: str(request.get("camera") or first_camera)
        )
        self.control_handlers["status"] = lambda _req: {"ok": True, "state": self.state()}
        self.components.append(ControlServer(self.config.state_dir, self.control_handlers, self.config.control))
        return self

    def _build_features(self) -> None:
        """Feature packages (MQTT, vision, recording) add their components and consumers here."""
        # First: the durable MQTT outbox becomes the bus's journal (seq shared with CLI processes), and the
        # publisher starts before and stops after everything that emits events.
        from edge.mqtt.service import build as build_mqtt

        self.mqtt = build_mqtt(self.config, self.bus, self.clock, self.state, self.snapshot_jpeg)
        for name in self.config.cameras:
            self.frame_consumers[name].append(self._keep_latest)
        self.components.append(self.mqtt)
        if self.config.faces.enabled:
            from edge.vision.pipeline import attach as attach_faces

            attach_faces(self)  # loads the models once; consumes motion frames, publishes person/face
        from edge.recording.recorder import build as build_recording

        # Started before the cameras (its start() recovers the clip store), stopped after them. Built even
        # with recording.enabled false: it then records nothing, but retention keeps deleting old clips.
        pi_cameras = {
            name: lambda name=name: getattr(getattr(self.cameras.get(name), "source", None), "camera", None)
            for name, cam in self.config.cameras.items()
            if cam.source == "picamera2" and self.config.recording.pi_encoder
        }
        recording = build_recording(self.config, self.bus, self.clock, pi_cameras=pi_cameras)
        self.components.append(recording)
        self.bus.subscribe(recording.on_event)
        for name in self.config.cameras:
            self.frame_consumers[name].append(recording.on_frame)
        self.state_providers.append(recording.state)
        recording.attach_health(self._beater)
        # Footage requests: lapsed approvals and expired holds are audited by the daemon's housekeeping too,
        # not only when the owner next runs a footage command; the pending count feeds the state summary.
        self.components.append(Housekeeping(self, HOUSEKEEPING_INTERVAL_S))
        if self.config.web.enabled:  # the owner's page: one thread, started last, stopped first
            from edge.web.server import WebServer

            self.components.append(WebServer(self.config, self.clock, self.snapshot_jpeg, self.bus.publish))
        self.state_providers.append(lambda: {"pending_requests": self._pending_requests})

    def _keep_latest(self, frame: Frame) -> None:
        self._latest[frame.camera] = frame  # a reference only; frames are immutable

    def snapshot_jpeg(self, camera: str | None = None) -> bytes | None:
        """The newest frame of a camera (default: the doorbell's) as JPEG; privacy masks are already applied."""
        name = camera or self.config.button.camera or next(iter(self.config.cameras))
        frame = self._latest.get(name)
        if frame is None:
            return None
        try:
            return encode_jpeg(frame.image, SNAPSHOT_JPEG_QUALITY)
        except StorageError:
            return None

    def housekeeping(self) -> None:
        """Periodic chores that must happen even when nobody runs a command."""
        self.check_state_readable()
        if not (self.config.state_dir / "footage").exists():
            return  # no request was ever submitted: nothing to sweep (and no need to load the footage code)
        from edge.footage.desk import FootageDesk, pending_requests

        try:
            FootageDesk(self.config, self.clock, emit=self.bus.publish, actor="daemon").sweep()
            self._pending_requests = pending_requests(self.config, self.clock)
        except Exception:
            log.exception("footage housekeeping failed")

    def check_state_readable(self) -> None:
        """Say loudly (WARNING + a `system` event over MQTT) when the face gallery or the audit log cannot be read,
        e.g. files a root-run command left behind: "0 enrolled" would hide it. Said again only when it changes."""
        from edge.vision.gallery import Gallery

        checks: dict[str, Callable[[], object]] = {}
        if os.path.lexists(self.config.state_dir / "audit"):  # no audit log yet: nothing to read (nor footage code)
            from edge.footage.audit import AuditLog

            checks["audit_log"] = AuditLog(self.config.state_dir, self.clock).check_access
        if self.config.faces.enabled:
            checks["face_gallery"] = Gallery(self.config.state_dir).templates
        for what in ("audit_log", "face_gallery"):
            problem = None
            try:
                checks.get(what, lambda: None)()
            except StorageError as exc:
                problem = str(exc)
            if problem == self._state_problems.get(what):
                continue
            if problem is None:
                del self._state_problems[what]
                log.info("%s can be read again", what.replace("_", " "))
                self.bus.publish(Event("system", None, self.clock.now(), {"status": "state_readable", "what": what}))
                continue
            self._state_problems[what] = problem
            log.warning("%s: %s%s", what, problem, "" if "read-only file system" in problem
                        else "; run owner commands as the service user (see README, Commands)")
            self.bus.publish(
                Event("system", None, self.clock.now(), {"status": "state_unreadable", "what": what, "error": problem})
            )

    def _beater(self, stage: str) -> Callable[[], None]:
        self.health.register(stage)
        return lambda: self.health.beat(stage)

    def _reporter(self, camera: str) -> Callable[[str, dict[str, object]], None]:
        def report(what: str, details: dict[str, object]) -> None:
            self.bus.publish(Event("system", camera, self.clock.now(), {"status": what, **details}))

        return report

    def _forward_motion(self, item: MotionFrame) -> None:
        for consumer in self.motion_consumers:
            consumer(item)

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
        for provider in self.state_providers:
            state.update(provider())
        return state

    # --- running -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._started_mono = self.clock.monotonic()
        for component in self.components:
            try:
                component.start()
            except (StorageError, OSError) as exc:
                if self.storage_problem is None:
                    raise
                log.error("%s cannot start on the read-only state dir (%s); running without it",
                          type(component).__name__, exc)
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
            motion.queue.close()
        for motion in self.motion.values():
            motion.join(share / max(1, len(self.motion)))
        self.bus.publish(Event("system", None, self.clock.now(), {"status": "stopping"}))
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:
                log.exception("stopping %r failed", component)
        self.notifier.close()


HOUSEKEEPING_INTERVAL_S = 60.0


class Housekeeping:
    """A named thread that runs App.housekeeping() at start and then every `interval` seconds."""

    def __init__(self, app: App, interval: float) -> None:
        self.app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.app.housekeeping()
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


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
    return 0
