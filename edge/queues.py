"""Small bounded queues between stages: a full queue drops its oldest item (fresh frames beat stale ones)."""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The producer closed the queue and every item has been taken."""


class DropOldestQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Add an item; returns False when the oldest item had to be dropped to make room."""
        with self._cond:
            if self._closed:
                raise Closed
            kept = True
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
                kept = False
            self._items.append(item)
            self._cond.notify()
            return kept

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, None after `timeout` with nothing to take, Closed once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise Closed
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
