"""The doorbell button: a debounced GPIO input on the Pi (gpiozero, imported lazily); a press is a ring."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.config import ButtonConfig
from edge.errors import ConfigError
from edge.ratelimit import RateLimiter

log = logging.getLogger(__name__)


class Debouncer:
    """Accepts a press only if the previous accepted press is at least `window_s` old."""

    def __init__(self, window_s: float, monotonic: Callable[[], float]) -> None:
        self.window_s = window_s
        self._monotonic = monotonic
        self._last: float | None = None
        self._lock = threading.Lock()

    def accept(self) -> bool:
        with self._lock:
            now = self._monotonic()
            if self._last is not None and now - self._last < self.window_s:
                return False
            self._last = now
            return True


class GpioButton:
    """Wraps gpiozero.Button; gpiozero's own bounce_time plus our debouncer guard against contact bounce.

    With a `limiter` (the daemon's ring limit, shared with the control socket), a press within the ring interval
    of the last accepted ring on `camera` is refused: a stuck or hammered button is one ring per few seconds.
    """

    def __init__(self, config: ButtonConfig, on_press: Callable[[], object], monotonic: Callable[[], float],
                 *, limiter: RateLimiter | None = None, camera: str = "") -> None:
        self.config = config
        self.on_press = on_press
        self.debouncer = Debouncer(config.debounce_ms / 1000.0, monotonic)
        self.limiter = limiter
        self.camera = camera
        self.device: Any = None

    def start(self) -> None:
        if self.config.gpio_pin is None:
            return
        try:
            gpiozero = importlib.import_module("gpiozero")
        except ImportError as exc:
            raise ConfigError(
                "button.gpio_pin is set but gpiozero is not installed: on Raspberry Pi OS `sudo apt install "
                "python3-gpiozero` (or `pip install doorbell-edge[pi]`), or set button.gpio_pin: null"
            ) from exc
        bounce = self.config.debounce_ms / 1000.0 or None
        self.device = gpiozero.Button(self.config.gpio_pin, pull_up=self.config.pull_up, bounce_time=bounce)
        self.device.when_pressed = self._pressed
        log.info("doorbell button on GPIO%d", self.config.gpio_pin)

    def _pressed(self, *_: object) -> None:
        if not self.debouncer.accept():
            log.debug("button bounce ignored")
            return
        # The limiter logs the first refusal of a flood and counts the rest (a press has nobody to answer).
        if self.limiter is not None and self.limiter.check(self.camera) is not None:
            return
        self.on_press()

    def stop(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None
