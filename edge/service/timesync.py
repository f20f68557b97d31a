"""Trusted time: whether the wall clock is synchronised, its persisted high-water mark, clock jumps and the
grace period during which nothing is deleted and no hold expires (the rules are in docs/time.md)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from edge import layout
from edge.clock import Clock, parse_rfc3339, rfc3339, synchronized
from edge.fsutil import fsync_dir
from edge.layout import StateLayout

log = logging.getLogger(__name__)

STATE_NAME = layout.TIME_STATE
STEP_TOLERANCE_S = 2.0  # a frame this far behind the high-water mark was stamped by a clock that stepped back
PERSIST_EVERY_S = 60.0  # the high-water mark is written at least this often (a restart within it is no jump)
CHECK_EVERY_S = 10.0

TrustMode = Literal["sync", "always"]

# --- is the kernel's clock synchronised? ----------------------------------------------------------------------

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
_MAXERROR_LIMIT_US = 16_000_000 - 1  # the kernel's NTP_PHASE_LIMIT: maxerror saturates there when unsynced


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex (linux/timex.h); read-only use (modes = 0)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@functools.lru_cache(maxsize=1)
def _adjtimex() -> Any:
    """libc's adjtimex, looked up once (find_library runs ldconfig in a subprocess); None where there is none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def adjtimex_synchronized() -> bool | None:
    """The kernel's own answer (what NTPSynchronized in timedatectl reports): False while STA_UNSYNC is set or
    the maximum error has saturated; None when adjtimex cannot be called (not Linux)."""
    call = _adjtimex()
    if call is None:
        return None
    timex = _Timex()  # modes = 0: read only, needs no privilege
    state = call(ctypes.byref(timex))
    if state < 0:
        return None
    return not (state == _TIME_ERROR or timex.status & _STA_UNSYNC or timex.maxerror >= _MAXERROR_LIMIT_US)


def timedatectl_synchronized() -> bool | None:
    """systemd's answer (`timedatectl show -p NTPSynchronized`); None when timedatectl is missing or fails."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "--property=NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip().lower()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None


_SYNC_ANSWER_S = 5.0  # how long one answer serves: the journal asks on every prune, timedatectl is a subprocess
_sync_answer: tuple[float, bool | None] | None = None


def kernel_synchronized() -> bool | None:
    """adjtimex first, timedatectl where adjtimex is unavailable; None (unknown, so not synchronised) else.
    One answer serves for a few seconds (monotonic), so callers on a loop cost nothing."""
    global _sync_answer
    now = time.monotonic()
    if _sync_answer is not None and now - _sync_answer[0] < _SYNC_ANSWER_S:
        return _sync_answer[1]
    result = adjtimex_synchronized()
    if result is None:
        result = timedatectl_synchronized()
    _sync_answer = (now, result)
    return result


# --- the persisted state --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeState:
    """What <state_dir>/time.json holds. `wall` is the last wall time the daemon saw (written about once a
    minute); `high_water` the latest trusted wall time; `grace_left_s` the stable seconds (no further jump,
    measured on the monotonic clock) still needed before retention deletes or a hold expires again (0: no
    grace); `frozen` the time holds are judged at during a grace period (the expected time just before the
    jump)."""

    wall: datetime | None = None
    high_water: datetime | None = None
    grace_left_s: float = 0.0
    frozen: datetime | None = None
    jump_s: float = 300.0
    grace_s: float = 86400.0
    last_jump: dict[str, Any] | None = None
    unreadable: bool = False  # the file existed but could not be read: treated as a grace period

    @property
    def in_grace(self) -> bool:
        return self.grace_left_s > 0 or self.unreadable

    def to_json(self) -> dict[str, Any]:
        def ts(value: datetime | None) -> str | None:
            return None if value is None else rfc3339_us(value)

        return {
            "wall": ts(self.wall),
            "high_water": ts(self.high_water),
            "grace_left_s": round(self.grace_left_s, 3),
            "frozen": ts(self.frozen),
            "jump_s": self.jump_s,
            "grace_s": self.grace_s,
            "last_jump": self.last_jump,
        }


def rfc3339_us(value: datetime) -> str:
    """RFC 3339 UTC with microseconds (the high-water mark is compared with frame times)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(value: Any) -> datetime | None:
    return None if value is None else parse_rfc3339(value)


def load_state(state_dir: Path) -> TimeState | None:
    """The persisted state; None when there is none yet; `unreadable` set when the file is damaged."""
    path = StateLayout.of(state_dir).time_state
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s is unreadable (%s): acting as in a clock-jump grace period", path, exc)
        return TimeState(unreadable=True)
    try:
        return TimeState(
            wall=_parse(raw.get("wall")),
            high_water=_parse(raw.get("high_water")),
            grace_left_s=float(raw.get("grace_left_s", 0.0)),
            frozen=_parse(raw.get("frozen")),
            jump_s=float(raw.get("jump_s", 300.0)),
            grace_s=float(raw.get("grace_s", 86400.0)),
            last_jump=raw.get("last_jump"),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        log.error("%s has bad values (%s): acting as in a clock-jump grace period", path, exc)
        return TimeState(unreadable=True)


def save_state(state_dir: Path, state: TimeState) -> None:
    """Write atomically: temp file, fsync, rename, fsync the directory."""
    path = StateLayout.of(state_dir).time_state
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the state dir's files are private
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# --- the pure rules -------------------------------------------------------------------------------------------


def hold_time_of(state: TimeState | None, now: datetime) -> datetime:
    """The time holds are judged at: `now`, except during a grace period (the frozen pre-jump time, or now if
    earlier) and when the persisted wall time is stale by more than a jump (no daemon is watching the clock:
    never later than the last time it saw)."""
    if state is None:
        return now
    if state.in_grace:
        anchor = state.frozen or state.wall or state.high_water
        return min(now, anchor) if anchor is not None else now
    if state.wall is not None and abs((now - state.wall).total_seconds()) > state.jump_s:
        return min(now, state.wall)
    return now


def deletion_allowed(state: TimeState | None, now: datetime) -> bool:
    """Retention may delete: no grace period, and the persisted wall time agrees with `now`."""
    if state is None:
        return True
    if state.in_grace:
        return False
    return state.wall is None or abs((now - state.wall).total_seconds()) <= state.jump_s + PERSIST_EVERY_S


def hold_time(state_dir: Path, clock: Clock) -> datetime:
    """For any process (the footage desk, the CLI): the time holds are judged at, from the persisted state."""
    return hold_time_of(load_state(state_dir), clock.now())


class FileTimeGuard:
    """The read-only view of the daemon's time state, for processes that do not watch the clock themselves."""

    def __init__(self, state_dir: Path, clock: Clock) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock

    def hold_time(self) -> datetime:
        return hold_time(self.state_dir, self.clock)

    def retention(self) -> tuple[bool, bool, datetime]:
        """(deletion allowed, wall clock trusted, now)."""
        now = self.clock.now()
        state = load_state(self.state_dir)
        return deletion_allowed(state, now), False, now


# --- the daemon's watcher -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeStatus:
    now: datetime
    synced: bool
    trusted: bool  # synchronised (or trust "always") and not behind the high-water mark
    in_grace: bool
    jump_s: float | None  # the jump this check saw (signed seconds), if any


class TimeKeeper:
    """Watches the wall clock against the monotonic clock and the persisted mark; starts and counts down the
    grace period; tells the owner (log and a `system` event). One per daemon; check() is cheap and thread-safe."""

    def __init__(
        self,
        state_dir: Path,
        clock: Clock,
        *,
        jump_s: float = 300.0,
        grace_hours: float = 24.0,
        trust: TrustMode = "sync",
        publish: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.jump_s = jump_s
        self.grace_s = grace_hours * 3600.0
        self.trust = trust
        self.publish = publish or (lambda _status, _fields: None)
        self._lock = threading.RLock()
        self._last: tuple[datetime, float] | None = None  # (wall, monotonic) at the previous check
        self._persisted_wall: datetime | None = None
        self._persist_failing = False
        self._state = TimeState(jump_s=jump_s, grace_s=self.grace_s)
        self._synced = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what others ask ---------------------------------------------------------------------------------------

    @property
    def state(self) -> TimeState:
        return self._state

    def hold_time(self) -> datetime:
        with self._lock:
            return hold_time_of(self._state, self.clock.now())

    def retention(self) -> tuple[bool, bool, datetime]:
        """(deletion allowed, wall clock trusted, now), after checking the clock."""
        status = self.check()
        return not status.in_grace, status.trusted, status.now

    def frame_trusted(self, ts: datetime) -> bool:
        """Whether a frame stamped `ts` carries a trusted time: the clock is synchronised (or trusted by config)
        and `ts` is not behind the latest trusted time seen (a step back makes times overlap)."""
        with self._lock:
            if not self._trusted_clock():
                return False
            high = self._state.high_water
            if high is not None and ts < high - timedelta(seconds=STEP_TOLERANCE_S):
                return False
            if high is None or ts > high:
                self._state = replace(self._state, high_water=ts)
            return True

    def _trusted_clock(self) -> bool:
        return self.trust == "always" or self._synced

    # -- the check ---------------------------------------------------------------------------------------------

    def check(self) -> TimeStatus:
        with self._lock:
            now, mono = self.clock.now(), self.clock.monotonic()
            synced = bool(synchronized(self.clock))
            self._synced = synced
            state, dirty = self._state, False
            if self._last is None:
                loaded = load_state(self.state_dir)
                if loaded is not None:
                    state = replace(loaded, jump_s=self.jump_s, grace_s=self.grace_s,
                                    grace_left_s=self.grace_s if loaded.unreadable else loaded.grace_left_s,
                                    unreadable=False)
                    dirty = loaded.unreadable
                expected = state.wall
                elapsed = 0.0
            else:
                last_wall, last_mono = self._last
                elapsed = max(0.0, mono - last_mono)
                expected = last_wall + timedelta(seconds=elapsed)
            jump = (now - expected).total_seconds() if expected is not None else 0.0
            jumped = abs(jump) > self.jump_s
            if jumped:
                assert expected is not None
                frozen = min(state.frozen, expected) if state.in_grace and state.frozen else expected
                at_start = self._last is None
                state = replace(
                    state,
                    grace_left_s=self.grace_s,
                    frozen=frozen,
                    last_jump={"at": rfc3339(now), "seconds": round(jump, 3), "expected": rfc3339(expected),
                               "at_start": at_start},
                )
                dirty = True
                self._told_jump(jump, expected, now, at_start)
            elif state.grace_left_s > 0:
                # Counted on the monotonic clock whether or not the clock is synchronised: a device that never
                # synchronises (no network) must delete again one day, or its disk fills and recording pauses
                # for good. A synchronisation that steps the clock is a jump and starts the count again.
                left = state.grace_left_s - elapsed
                if left <= 0:
                    # The grace period is over: the clock has been stable for grace_s. Holds and retention use
                    # the wall clock again; the high-water mark restarts from now.
                    state = replace(state, grace_left_s=0.0, frozen=None, high_water=now)
                    if self._trusted_clock():
                        log.warning("clock stable and synchronised for %.1f h: retention and hold expiry resume",
                                    self.grace_s / 3600)
                    else:
                        log.warning("clock stable for %.1f h but still not synchronised: retention and hold expiry "
                                    "resume on an unsynchronised clock (its time may be wrong: check it, or set "
                                    "recording.clock_trust: always if it is right)", self.grace_s / 3600)
                    self.publish("clock_grace_over", {"high_water": rfc3339(now), "synchronised": synced})
                    dirty = True
                else:
                    dirty = dirty or abs(left - state.grace_left_s) >= PERSIST_EVERY_S
                    state = replace(state, grace_left_s=left)
            if self._trusted_clock() and not jumped and (state.high_water is None or now > state.high_water):
                state = replace(state, high_water=now)
            state = replace(state, wall=now)
            if (
                dirty
                or self._persisted_wall is None
                or abs((now - self._persisted_wall).total_seconds()) >= PERSIST_EVERY_S
            ):
                self._persist(state)
            self._state = state
            self._last = (now, mono)
            high = state.high_water
            behind = high is not None and now < high - timedelta(seconds=STEP_TOLERANCE_S)
            return TimeStatus(now, synced, self._trusted_clock() and not behind, state.in_grace,
                              jump if jumped else None)

    def _persist(self, state: TimeState) -> None:
        try:
            save_state(self.state_dir, state)
            self._persisted_wall = state.wall
        except OSError as exc:
            # Said once at ERROR (a read-only or full state dir would repeat it every check), then at DEBUG
            # until a write works again.
            level = logging.DEBUG if self._persist_failing else logging.ERROR
            log.log(level, "cannot write %s: %s (the clock's high-water mark is not saved)", STATE_NAME, exc)
            self._persist_failing = True
        else:
            if self._persist_failing:
                log.warning("%s is written again", STATE_NAME)
            self._persist_failing = False

    def _told_jump(self, jump: float, expected: datetime, now: datetime, at_start: bool) -> None:
        days = abs(jump) / 86400
        direction = "forward" if jump > 0 else "back"
        log.warning(
            "the wall clock jumped %s by %.0f s (%.1f days)%s: nothing is deleted and no hold expires until it "
            "has been stable (no further jump) for %.1f h",
            direction, abs(jump), days, " while the daemon was stopped, or at boot" if at_start else "",
            self.grace_s / 3600,
        )
        self.publish(
            "clock_jump",
            {
                "seconds": round(jump, 3),
                "expected": rfc3339(expected),
                "at_start": at_start,
                "grace_hours": round(self.grace_s / 3600, 3),
            },
        )

    # -- the component -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._run, name="timesync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.check()
            except Exception:
                log.exception("clock check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        with contextlib.suppress(Exception):
            self.check()
