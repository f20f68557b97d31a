"""A camera recorder's thread: frames through a bounded drop-oldest queue, trigger events in order, a heartbeat
each turn, and an idle flag for tests and benchmarks."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from edge.events.bus import Event
from edge.queues import Closed, DropOldestQueue
from edge.types import Frame

log = logging.getLogger(__name__)

EVENTS_PER_TURN = 32  # trigger events handled between two heartbeats (a ring flood must not withhold the watchdog)


class RecorderInbox:
    """on_frame/on_event never block; a named thread hands them to handle_frame/handle_event (which a subclass
    does, and tests can drive directly); idle() runs when a turn had no frame; close() once the thread ends."""

    def __init__(self, camera: str, queue_size: int) -> None:
        self.camera = camera
        self.beat: Callable[[], None] = lambda: None  # the daemon's stage heartbeat (watchdog)
        self._frames: DropOldestQueue[Frame] = DropOldestQueue(queue_size)
        self._events: collections.deque[Event] = collections.deque()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._idle_lock = threading.Lock()

    def handle_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    def handle_event(self, event: Event) -> None:
        raise NotImplementedError

    def wants(self, event: Event) -> bool:
        """Whether on_event queues this event."""
        return event.camera == self.camera

    def idle(self) -> None:
        """A turn passed with no frame."""

    def frame_dropped(self) -> None:
        """The thread fell behind: the oldest queued frame was dropped for a new one."""

    def close(self) -> object:
        """The thread has stopped: release what the work holds."""
        return None

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
                    self.frame_dropped()
            except Closed:
                return

    def on_event(self, event: Event) -> None:
        """A bus sink: only the events wants() accepts are queued."""
        if self.wants(event):
            with self._idle_lock:
                self._idle.clear()
                self._events.append(event)

    def wait_idle(self, timeout: float) -> bool:
        """True once every queued frame and event has been handled (for tests and benchmarks)."""
        return self._idle.wait(timeout)

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
                    self.idle()
            except Exception:
                log.exception("recorder %s failed on a frame; continuing", self.camera)
            with self._idle_lock:  # atomic with on_frame's clear-and-put: idle never hides a queued frame
                if len(self._frames) == 0 and not self._events:
                    self._idle.set()
        while self._events:
            self.handle_event(self._events.popleft())
        self._idle.set()
