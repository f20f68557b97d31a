#!/usr/bin/env python3
"""The owner's page under a connection flood (issue 16): the daemon's open files and RSS, what the page keeps
and what it closes, whether the owner still gets in, and how many log lines the flood costs.

    python bench/web_flood.py [--bare 1000] [--json]

Runs `doorbell-edge run` on the demo camera with the page on and the open-file soft limit at 1024 (systemd's
default for a service), with the default web limits. Then, from 127.0.0.0/8 source addresses (all loopback):
  1. `--bare` TCP connections that never start TLS, 8 per address: the daemon's open files and RSS while they
     are open, how many the page closed on arrival, whether https://.../healthz from 127.0.0.1 answers meanwhile,
     and the seconds until the handshake deadline (10 s) has closed them all;
  2. 80 TLS connections from one address, each with half a request head sent: kept, refused, and /healthz from
     127.0.0.1 (the old server answered 503 to everyone here);
  3. the page's whole cap (web.max_connections) of such connections, web.max_connections_per_client from each
     address: RSS per held connection, and /healthz from 127.0.0.1 (refused: many addresses together can fill
     the cap).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from web_memory import REPO, env_for, free_port, proc_mb, wait_started  # noqa: E402

from edge.config import WebConfig  # noqa: E402

HOST = "doorbell.test"
HALF_HEAD = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n".encode()


def daemon_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def soft_nofile_1024() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


class Flood:
    def __init__(self, port: int, ca: Path) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        self.socks: list[socket.socket] = []

    def tcp(self, source: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30, source_address=(source, 0))

    def slow_tls(self, source: str) -> bool:
        try:
            sock = self.context.wrap_socket(self.tcp(source), server_hostname=HOST)
            sock.sendall(HALF_HEAD)
        except OSError:
            return False
        self.socks.append(sock)
        return True

    def healthz(self) -> str:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.context)
        try:
            conn.request("GET", "/healthz", headers={"Host": HOST})
            return str(conn.getresponse().status)
        except OSError as exc:
            return f"refused ({type(exc).__name__})"
        finally:
            conn.close()

    def open_count(self, wait_s: float = 0.0) -> int:
        """How many of the flood's sockets the daemon has not closed."""
        alive = []
        for sock in self.socks:
            try:
                sock.setblocking(False)
                data = sock.recv(1, socket.MSG_PEEK) if not isinstance(sock, ssl.SSLSocket) else sock.recv(1)
                if data:
                    alive.append(sock)
                else:
                    sock.close()
            except (BlockingIOError, ssl.SSLWantReadError):
                alive.append(sock)
            except OSError:
                sock.close()
        self.socks = alive
        return len(alive)

    def close(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.socks = []


def measure(bare: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    state = tmp / "state"
    config = tmp / "flood.yaml"
    config.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\nfaces:\n  enabled: false\n"
                      "output:\n  stdout_events: true\n"
                      f"web:\n  enabled: true\n  listen: 127.0.0.1\n  port: {port}\n  hostname: {HOST}\n")
    subprocess.run([sys.executable, "-m", "edge", "web", "setup-code", "--config", str(config)], cwd=REPO,
                   env=env_for(state, tmp), capture_output=True, check=True)
    log = tmp / "daemon.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)], cwd=REPO,
                                env=env_for(state, tmp), stdout=subprocess.PIPE, stderr=err,
                                preexec_fn=soft_nofile_1024)
    out: dict[str, Any] = {}
    flood = Flood(port, state / "web" / "tls" / "ca.crt")
    try:
        wait_started(proc)
        time.sleep(3)
        out["idle"] = {"fds": daemon_fds(proc.pid), "rss_mb": round(proc_mb(proc.pid, "VmRSS"), 1),
                       "healthz": flood.healthz()}
        for i in range(bare):
            flood.socks.append(flood.tcp(f"127.0.2.{1 + i // 8}"))
        time.sleep(1)
        started = time.monotonic()
        out["bare"] = {"opened": bare, "kept": flood.open_count(), "fds": daemon_fds(proc.pid),
                       "rss_mb": round(proc_mb(proc.pid, "VmRSS"), 1), "healthz_during": flood.healthz()}
        while flood.open_count() and time.monotonic() - started < 60:
            time.sleep(0.2)
        out["bare"]["all_closed_after_s"] = round(time.monotonic() - started + 1, 1)
        time.sleep(0.5)
        out["bare"]["healthz_after"] = flood.healthz()
        flood.close()

        kept = sum(flood.slow_tls("127.0.0.2") for _ in range(80))
        out["one_address"] = {"opened": 80, "kept": kept, "fds": daemon_fds(proc.pid), "healthz": flood.healthz()}
        flood.close()
        time.sleep(1)

        cap, per = WebConfig().max_connections, WebConfig().max_connections_per_client
        before = proc_mb(proc.pid, "VmRSS")
        kept = sum(flood.slow_tls(f"127.0.4.{1 + i // per}") for i in range(cap))
        grown = proc_mb(proc.pid, "VmRSS") - before
        out["cap"] = {"opened": cap, "kept": kept, "fds": daemon_fds(proc.pid),
                      "rss_growth_mb": round(grown, 1), "kb_per_connection": round(grown * 1024 / max(kept, 1), 1),
                      "healthz": flood.healthz()}
        flood.close()
    finally:
        flood.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out["exit"] = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out["exit"] = "killed"
    lines = log.read_text(errors="replace").splitlines()
    out["log_lines_refused"] = sum("web: refused" in line for line in lines)
    out["log_lines_total"] = len(lines)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bare", type=int, default=1000, help="bare TCP connections in the first flood")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.bare + 2048)), hard))  # the flood's own
    with tempfile.TemporaryDirectory(prefix="web-flood-") as folder:
        result = measure(args.bare, Path(folder))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
