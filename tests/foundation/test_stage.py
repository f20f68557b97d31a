"""The one stage loop: pull with a timeout, step, heartbeat, stop (closed queue or stop event), errors."""

from __future__ import annotations

import threading

from edge.queues import DropOldestQueue
from edge.stage import StageLoop


def test_a_closed_queue_is_drained_then_the_loop_ends_and_on_end_runs() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(8)
    seen: list[int | None] = []
    beats: list[int] = []
    ended: list[str] = []
    for item in (1, 2, 3):
        queue.put(item)
    queue.close()
    loop = StageLoop("test", queue.get, seen.append, lambda: beats.append(1), on_end=lambda: ended.append("end"))
    loop.start()
    loop.join(5.0)
    assert loop.ended.is_set() and not loop.thread.is_alive()
    assert seen == [1, 2, 3] and ended == ["end"]
    assert len(beats) == 4  # before each pull, the last one finding the queue closed


def test_nothing_in_time_steps_with_none_and_the_stop_event_ends_the_loop() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(2)
    idle = threading.Event()

    def step(item: int | None) -> None:
        if item is None:
            idle.set()

    loop = StageLoop("test", queue.get, step, lambda: None, timeout=0.01)
    loop.start()
    assert idle.wait(5.0)
    loop.stop()
    loop.join(5.0)
    assert loop.ended.is_set() and not loop.thread.is_alive()


def test_a_failing_step_goes_to_on_error_and_the_stage_carries_on() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(8)
    done: list[int | None] = []
    failed: list[tuple[int | None, str]] = []

    def step(item: int | None) -> None:
        if item == 2:
            raise ValueError("bad frame")
        done.append(item)

    for item in (1, 2, 3):
        queue.put(item)
    queue.close()
    loop = StageLoop("test", queue.get, step, lambda: None, on_error=lambda item, exc: failed.append((item, str(exc))))
    loop.start()
    loop.join(5.0)
    assert done == [1, 3] and failed == [(2, "bad frame")]


def test_without_on_error_a_failing_step_ends_the_thread_and_its_heartbeat(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the thread's traceback is expected here
    queue: DropOldestQueue[int] = DropOldestQueue(8)
    beats: list[int] = []
    ended: list[str] = []
    for item in (1, 2):
        queue.put(item)

    def step(item: int | None) -> None:
        raise RuntimeError("stage bug")

    loop = StageLoop("test", queue.get, step, lambda: beats.append(1), on_end=lambda: ended.append("end"))
    loop.start()
    loop.join(5.0)
    assert not loop.thread.is_alive() and loop.ended.is_set()
    assert beats == [1] and ended == ["end"] and len(queue) == 1  # no more beats: the watchdog sees the stall
