"""Pre-roll: the last GOPs of encoded frames kept in memory, so a clip an event starts begins before it."""

from __future__ import annotations

import collections
from datetime import datetime, timedelta

from edge.recording.codec import EncodedFrame


class PreRoll:
    """Encoded frames grouped from each keyframe, kept for `pre` plus `slack` (events reach the recorder after
    analysis: a late event still gets its full pre-roll)."""

    def __init__(self, pre: timedelta, slack: timedelta) -> None:
        self._pre = pre
        self._keep = pre + slack
        self._gops: collections.deque[list[EncodedFrame]] = collections.deque()

    def clear(self) -> None:
        self._gops.clear()

    def add(self, packet: EncodedFrame) -> None:
        if packet.keyframe or not self._gops:
            self._gops.append([packet])
        else:
            self._gops[-1].append(packet)
        horizon = packet.ts - self._keep
        while len(self._gops) > 1 and self._gops[1][0].ts <= horizon:
            self._gops.popleft()

    def since(self, trigger_ts: datetime) -> list[EncodedFrame] | None:
        """The frames a clip triggered at `trigger_ts` starts with: from the last keyframe at or before
        trigger_ts - pre (or the oldest kept); None when no keyframe is kept yet."""
        gops = [g for g in self._gops if g[0].keyframe]
        if not gops:
            return None
        target = trigger_ts - self._pre
        start = next((i for i in range(len(gops) - 1, -1, -1) if gops[i][0].ts <= target), 0)
        return [packet for gop in gops[start:] for packet in gop]
