"""The guard's bookkeeping without a network: slots per client address and in all, the client key of a peer,
the refusal log's one line per client per minute, and the config's limits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.web.limits import OTHERS, Limits, RefusalLog, Slots, client_of

from .helpers import make_config


def test_slots_per_client_and_in_all() -> None:
    slots = Slots(per_client=2, total=3)
    assert slots.take("192.168.1.5") is None and slots.take("192.168.1.5") is None
    assert "2 connections from this client" in (slots.take("192.168.1.5") or "")
    assert slots.take("192.168.1.6") is None
    assert "already holds 3 connections" in (slots.take("192.168.1.7") or "")
    assert (slots.held, slots.of("192.168.1.5"), slots.of("192.168.1.7")) == (3, 2, 0)  # a refusal takes nothing
    slots.give_back("192.168.1.5")
    assert slots.take("192.168.1.7") is None
    with pytest.raises(ValueError, match="no open connection"):
        slots.give_back("10.0.0.1")  # a slot given back twice would let a client past its limit
    assert slots.held == 3


def test_a_client_is_its_address_and_an_ipv4_client_on_a_dual_stack_socket_counts_as_ipv4() -> None:
    assert client_of(("192.168.1.5", 50000)) == "192.168.1.5"
    assert client_of(("::ffff:192.168.1.5", 50000, 0, 0)) == "192.168.1.5"
    assert client_of(("fe80::1%eth0", 50000, 0, 2)) == "fe80::1"
    assert client_of(("FE80:0:0::1", 1, 0, 0)) == "fe80::1"
    assert client_of(None) == "None"  # no peer name: one shared key, never a crash


class Ticks:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_refused_client_is_logged_at_most_once_a_minute_with_the_count_in_between(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ticks = Ticks()
    refusals = RefusalLog(logging.getLogger("test.refusals"), ticks)
    assert refusals.refused("192.168.1.5", "too many")
    assert not any(refusals.refused("192.168.1.5", "too many") for _ in range(500))
    assert refusals.refused("192.168.1.6", "slow head")  # another client has its own minute
    ticks.t += 59.9
    assert not refusals.refused("192.168.1.5", "too many")
    ticks.t += 0.1
    assert refusals.refused("192.168.1.5", "too many")
    assert [r.getMessage() for r in caplog.records] == [
        "web: refused 192.168.1.5: too many",
        "web: refused 192.168.1.6: slow head",
        "web: refused 192.168.1.5: too many (501 more refused since the last line)",
    ]


def test_a_monotonic_clock_that_went_back_does_not_silence_the_log(caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks()
    refusals = RefusalLog(logging.getLogger("test.refusals"), ticks)
    assert refusals.refused("192.168.1.5", "too many")
    ticks.t -= 3600  # a fake or broken clock: never a minute of silence that lasts an hour
    assert refusals.refused("192.168.1.5", "too many")


def test_more_refused_clients_than_the_log_tracks_share_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ticks = Ticks()
    refusals = RefusalLog(logging.getLogger("test.refusals"), ticks, max_clients=3)
    for i in range(200):  # e.g. an IPv6 client that picks a new address per connection
        refusals.refused(f"2001:db8::{i:x}", "too many")
    assert len(caplog.records) == 4
    assert caplog.records[-1].getMessage() == f"web: refused {OTHERS}: too many"
    ticks.t += 61  # a minute on, the old entries are forgotten and new clients get their own lines again
    assert refusals.refused("2001:db8::ffff", "too many")
    assert len(refusals._last) <= 3


def test_the_limits_come_from_the_config_and_bad_ones_are_refused(tmp_path: Path) -> None:
    web = make_config(tmp_path, body_timeout_s=2, body_min_rate=100).web
    limits = Limits.of(web)
    assert (limits.per_client, limits.total, limits.handshake_s, limits.head_s) == (12, 128, 10, 10)
    assert limits.body_min_bytes == 200
    assert Limits.of(make_config(tmp_path, body_timeout_s=0.001, body_min_rate=1).web).body_min_bytes == 1
    with pytest.raises(ValueError, match="max_connections_per_client"):
        make_config(tmp_path, max_connections=8, max_connections_per_client=9)
    with pytest.raises(ValueError, match="header_timeout_s"):
        make_config(tmp_path, header_timeout_s=0)
