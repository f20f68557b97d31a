"""How much of the page one client may hold: the limits from `web.`, the open connections per client address,
and the refusal log that names a refused client at most once a minute."""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.config import WebConfig

REFUSAL_LOG_EVERY_S = 60.0
# More clients than this refused within a minute (only IPv6 can have that many addresses) share one log line.
REFUSAL_LOG_CLIENTS = 1024
OTHERS = "other clients"


@dataclass(frozen=True)
class Limits:
    per_client: int
    total: int
    handshake_s: float
    head_s: float
    body_window_s: float
    body_min_rate: int

    @classmethod
    def of(cls, web: WebConfig) -> Limits:
        return cls(web.max_connections_per_client, web.max_connections, web.handshake_timeout_s,
                   web.header_timeout_s, web.body_timeout_s, web.body_min_rate)

    @property
    def body_min_bytes(self) -> int:
        """What a request body must bring in each window of body_window_s."""
        return max(1, math.ceil(self.body_min_rate * self.body_window_s))


def client_of(peername: Any) -> str:
    """The client address of a socket's peer name; an IPv4 client on a dual-stack socket counts as its IPv4."""
    host = str(peername[0]) if isinstance(peername, tuple | list) and peername else str(peername)
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class Slots:
    """The open connections, per client address and in all. Not thread-safe: the page's event loop owns it."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._open: Counter[str] = Counter()
        self.held = 0

    def take(self, client: str) -> str | None:
        """Takes a slot for `client`, or says why not (and takes nothing)."""
        if self.held >= self.total:
            return f"the page already holds {self.total} connections (web.max_connections)"
        if self._open[client] >= self.per_client:
            return f"{self.per_client} connections from this client are open (web.max_connections_per_client)"
        self._open[client] += 1
        self.held += 1
        return None

    def give_back(self, client: str) -> None:
        if self._open[client] <= 0:
            raise ValueError(f"no open connection of {client} to give back")
        self._open[client] -= 1
        if not self._open[client]:
            del self._open[client]
        self.held -= 1

    def of(self, client: str) -> int:
        return self._open[client]


class RefusalLog:
    """A warning per refused client at most every `every_s` seconds; the next line says how many were not logged,
    so a flood costs a line a minute per client, not a line per connection."""

    def __init__(self, logger: logging.Logger, monotonic: Callable[[], float],
                 every_s: float = REFUSAL_LOG_EVERY_S, max_clients: int = REFUSAL_LOG_CLIENTS) -> None:
        self.logger = logger
        self.monotonic = monotonic
        self.every_s = every_s
        self.max_clients = max_clients
        self._last: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()

    def refused(self, client: str, why: str) -> bool:
        """Records one refusal of `client`; True if it was logged."""
        now = self.monotonic()
        if client not in self._last and len(self._last) >= self.max_clients:
            self._forget_before(now - self.every_s)
            if len(self._last) >= self.max_clients:
                client = OTHERS
        last = self._last.get(client)
        # A monotonic clock never goes back; if a fake or broken one does, log rather than stay silent.
        if last is not None and 0 <= now - last < self.every_s:
            self._quiet[client] += 1
            return False
        quiet = self._quiet.pop(client, 0)
        more = f" ({quiet} more refused since the last line)" if quiet else ""
        self.logger.warning("web: refused %s: %s%s", client, why, more)
        self._last[client] = now
        return True

    def _forget_before(self, cutoff: float) -> None:
        for client in [c for c, at in self._last.items() if at < cutoff]:
            del self._last[client]
            self._quiet.pop(client, None)
