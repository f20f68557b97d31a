"""Rate limits for actions anyone near the device can trigger in a loop (ring, snapshot, MQTT commands)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """A refused action: how long until the next one is accepted, and a sentence saying why."""

    retry_after_s: float
    reason: str

    def reply(self) -> dict[str, Any]:
        """The control socket's answer to a refused command."""
        return {"ok": False, "rate_limited": True, "retry_after_s": round(self.retry_after_s, 3),
                "error": self.reason}


class RateLimiter:
    """At most one accepted action per key every `interval_s` seconds of the monotonic clock (0: no limit).

    Keys are fixed up front (camera names, command names), so a client inventing keys cannot grow memory or
    slip past the limit: an unknown key is refused. The first refusal after an accepted action is logged as
    a warning, the rest of a flood only counted; the next accepted action logs how many were refused.
    """

    def __init__(self, what: str, interval_s: float, keys: Iterable[str], monotonic: Callable[[], float],
                 setting: str) -> None:
        self.what = what  # e.g. "ring on {key}": names the action in logs and replies
        self.interval_s = float(interval_s)
        self.setting = setting
        self._monotonic = monotonic
        self._keys = frozenset(keys)
        self._last: dict[str, float] = {}
        self._refused: dict[str, int] = dict.fromkeys(self._keys, 0)
        self.refused_total = 0
        self._lock = threading.Lock()

    def knows(self, key: str) -> bool:
        return key in self._keys

    def check(self, key: str) -> Refusal | None:
        """None when the action may go ahead now (and counts it), else a Refusal."""
        with self._lock:
            if key not in self._keys:
                return Refusal(0.0, f"{self.what.format(key=repr(key[:40]))}: not one of "
                                    f"{', '.join(sorted(self._keys))}")
            now = self._monotonic()
            last = self._last.get(key)
            if last is not None and self.interval_s > 0:
                wait = self.interval_s - (now - last)
                # A monotonic clock never goes back; a wait longer than the interval means a fake or broken
                # clock, and must not lock the action out for good.
                if 0 < wait <= self.interval_s:
                    self._refused[key] += 1
                    self.refused_total += 1
                    if self._refused[key] == 1:
                        log.warning("%s: rate limited (at most one per %g s, %s); further refusals are counted",
                                    self.what.format(key=key), self.interval_s, self.setting)
                    return Refusal(wait, f"rate limited: {self.what.format(key=repr(key))} was accepted "
                                         f"{now - last:.1f} s ago; at most one per {self.interval_s:g} s "
                                         f"({self.setting}); retry in {wait:.1f} s")
            refused, self._refused[key] = self._refused[key], 0
            self._last[key] = now
        if refused:
            log.warning("%s accepted after %d rate-limited attempt(s)", self.what.format(key=key), refused)
        return None
