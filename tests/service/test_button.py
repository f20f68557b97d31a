"""The doorbell button: debounce, and the GPIO adapter against a fake shaped like gpiozero.Button."""

from __future__ import annotations

import sys
import types

import pytest

from edge.clock import FakeClock
from edge.config import ButtonConfig
from edge.errors import ConfigError
from edge.service.button import Debouncer, GpioButton


class FakeButton:
    """gpiozero.Button(pin, *, pull_up=True, bounce_time=None) with when_pressed and close()."""

    def __init__(self, pin: int, *, pull_up: bool = True, bounce_time: float | None = None) -> None:
        self.pin, self.pull_up, self.bounce_time = pin, pull_up, bounce_time
        self.when_pressed = None
        self.closed = False

    def press(self) -> None:
        if self.when_pressed is not None:
            self.when_pressed()

    def close(self) -> None:
        self.closed = True


def test_debouncer_accepts_one_press_per_window() -> None:
    clock = FakeClock()
    debouncer = Debouncer(0.05, clock.monotonic)
    results = []
    start = clock.monotonic()
    for at in (0, 0.01, 0.03, 0.06, 0.08, 0.2):
        clock.advance(start + at - clock.monotonic())
        results.append(debouncer.accept())
    assert results == [True, False, False, True, False, True]


def test_gpio_button_rings_once_per_press(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", types.SimpleNamespace(Button=FakeButton))
    clock = FakeClock()
    presses: list[int] = []
    button = GpioButton(ButtonConfig(gpio_pin=17, debounce_ms=50), lambda: presses.append(1), clock.monotonic)
    button.start()
    device = button.device
    assert (device.pin, device.pull_up, device.bounce_time) == (17, True, 0.05)
    device.press()
    device.press()  # bounce
    clock.advance(1)
    device.press()
    assert len(presses) == 2
    button.stop()
    assert device.closed


def test_gpio_without_gpiozero_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    with pytest.raises(ConfigError, match="gpiozero is not installed"):
        GpioButton(ButtonConfig(gpio_pin=4), lambda: None, FakeClock().monotonic).start()


def test_no_pin_means_no_gpio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    GpioButton(ButtonConfig(), lambda: None, FakeClock().monotonic).start()
