"""The one stage loop (pull with a timeout, step, heartbeat, stop) and the shape every daemon feature is built in."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from edge.queues import Closed

if TYPE_CHECKING:
    from edge.clock import Clock
    from edge.config import Config
    from edge.events.bus import Event, EventBus
    from edge.service.health import Health
    from edge.types import Frame, MotionFrame

log = logging.getLogger(__name__)

T = TypeVar("T")

PULL_TIMEOUT_S = 0.5  # the longest a stage waits for input between two heartbeats


class StageLoop(Generic[T]):
    """One named thread: beat, `pull(timeout)` the next item (None when nothing came in time; Closed ends the
    loop), `step(item)`, until stopped. A step that raises goes to `on_error` (the stage carries on) or, without
    one, ends the thread: its heartbeat stops and the watchdog sees the stall. `on_end` runs last, always."""

    def __init__(
        self,
        name: str,
        pull: Callable[[float], T | None],
        step: Callable[[T | None], None],
        beat: Callable[[], None],
        on_error: Callable[[T | None, Exception], None] | None = None,
        on_end: Callable[[], None] | None = None,
        timeout: float = PULL_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.pull = pull
        self.step = step
        self.beat = beat
        self.on_error = on_error
        self.on_end = on_end
        self.timeout = timeout
        self.stop_event = threading.Event()
        self.ended = threading.Event()
        self.failed: BaseException | None = None  # what ended the loop, when a step raised without on_error
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.beat()
                try:
                    item = self.pull(self.timeout)
                except Closed:
                    break
                try:
                    self.step(item)
                except Exception as exc:
                    if self.on_error is None:
                        self.failed = exc
                        raise
                    self.on_error(item, exc)
        finally:
            try:
                if self.on_end is not None:
                    self.on_end()
            finally:
                self.ended.set()


# --- features -------------------------------------------------------------------------------------------------


class Component(Protocol):
    """Anything the daemon starts in order and stops in reverse."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Host:
    """What the daemon lends a feature beyond (config, bus, clock): heartbeats for its threads, the state
    summary and snapshots (for MQTT), and the open camera of a picamera2 source (for the Pi's encoder)."""

    health: Health
    state: Callable[[], dict[str, Any]]
    snapshot: Callable[[], bytes | None]  # the doorbell camera's newest frame as JPEG
    camera_handle: Callable[[str], Any]


@dataclass(frozen=True)
class Feature:
    """What a feature builder returns: its component and the flows it joins (each optional)."""

    component: Component
    on_frame: Callable[[Frame], None] | None = None  # every camera frame (masked), must not block
    on_motion: Callable[[MotionFrame], None] | None = None  # frames the motion gate let through, must not block
    on_event: Callable[[Event], None] | None = None  # every event on the bus
    state: Callable[[], dict[str, Any]] | None = None  # merged into the daemon's state summary


class FeatureBuilder(Protocol):
    def __call__(self, config: Config, bus: EventBus, clock: Clock, host: Host) -> Feature | None: ...
