"""The injected clock: monotonic seconds for durations, aware UTC datetimes for anything stored, and the
anchored capture clock that stamps frames (monotonic time anchored to the wall clock, re-anchored on a step)."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def synchronized(self) -> bool | None:
        """Whether the kernel says the wall clock is synchronised (None: cannot tell); see edge.service.timesync."""
        from edge.service.timesync import kernel_synchronized

        return kernel_synchronized()


class FakeClock:
    """A clock tests move by hand; sleep() advances it instead of waiting. step() moves only the wall clock
    (what NTP, a user or a bad RTC does); `synced` is what the kernel would say about it."""

    def __init__(self, start: datetime | None = None, *, synced: bool | None = True) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()
        self.synced = synced

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def step(self, seconds: float) -> None:
        """Step the wall clock by `seconds` (either way); monotonic time does not move."""
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def synchronized(self) -> bool | None:
        return self.synced


def synchronized(clock: Clock) -> bool | None:
    """Whether `clock`'s wall time is synchronised: its own answer when it has one, else the kernel's."""
    probe = getattr(clock, "synchronized", None)
    if callable(probe):
        result = probe()
        return None if result is None else bool(result)
    from edge.service.timesync import kernel_synchronized

    return kernel_synchronized()


@dataclass(frozen=True)
class Stamp:
    """A capture time: `ts` from the monotonic clock anchored to the wall clock; `step` is the wall clock's
    step (seconds, signed) when this stamp re-anchored, else 0.0."""

    ts: datetime
    mono: float
    step: float = 0.0


class CaptureClock:
    """Stamps frames: wall time at the anchor plus monotonic time since, so a wall-clock step never moves or
    squeezes frame times. When the wall clock and the anchored time disagree by more than `step_s` (a step,
    either way), the clock re-anchors and the stamp carries the step, so the recorder can end the clip."""

    def __init__(self, clock: Clock, step_s: float = 2.0) -> None:
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        self.clock = clock
        self.step_s = step_s
        self._anchor: tuple[datetime, float] | None = None

    def stamp(self) -> Stamp:
        mono = self.clock.monotonic()
        wall = self.clock.now()
        if self._anchor is None:
            self._anchor = (wall, mono)
            return Stamp(wall, mono)
        anchored = self._anchor[0] + timedelta(seconds=mono - self._anchor[1])
        drift = (wall - anchored).total_seconds()
        if abs(drift) > self.step_s:
            self._anchor = (wall, mono)
            return Stamp(wall, mono, drift)
        return Stamp(anchored, mono)


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a Z suffix."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime: stored times must be timezone-aware UTC")
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(value: object) -> datetime:
    """An RFC 3339 timestamp with a zone, as aware UTC; anything else is an error naming the value."""
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 timestamp string, not {type(value).__name__}")
    if not _RFC3339.match(value):
        raise ValueError(f"{value[:40]!r} is not an RFC 3339 timestamp with a zone (e.g. 2026-01-01T12:00:00Z)")
    text = value.upper().replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:  # Python keeps microseconds only
        digits = rest[: len(rest) - 6]
        text = f"{head}.{(digits + '000000')[:6]}{rest[-6:]}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value!r} is not a real date and time ({exc})") from exc
