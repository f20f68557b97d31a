"""Who watched which clip on the page: one audit record (web_clip_viewed) per session and clip, not one per Range
request the player makes, with a bounded memory of the pairs already recorded."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from edge.web.sessions import Session

REMEMBERED = 4096  # (session, clip) pairs kept; past that the oldest is forgotten and recorded again if watched


class Watched:
    """`record(kind, **data)` appends to the audit log and raises when it cannot (then nothing is remembered, and
    the caller serves nothing). Forgetting a pair (a restart, or more than `limit` pairs since) only ever means a
    second record, never a view without one."""

    def __init__(self, record: Callable[..., Any], limit: int = REMEMBERED) -> None:
        self._record = record
        self._limit = limit
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        # held across the append: the player's first Range requests arrive together, and must make one record
        self._lock = threading.Lock()

    def clip(self, session: Session, clip_id: str) -> None:
        key = (session.id_hash, clip_id)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return
            self._record("web_clip_viewed", user=session.user.name, role=session.user.role, clip=clip_id)
            self._seen[key] = None
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
