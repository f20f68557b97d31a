"""A real mosquitto for tests: own config, a free loopback port, start/stop/pause on demand."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

MOSQUITTO = os.environ.get("MOSQUITTO", shutil.which("mosquitto") or "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_mosquitto() -> str:
    if not Path(MOSQUITTO).is_file() or not os.access(MOSQUITTO, os.X_OK):
        pytest.fail(f"mosquitto not found at {MOSQUITTO}: install it (apt-get install mosquitto) or set $MOSQUITTO; "
                    "the MQTT tests need a real broker and never skip")
    return MOSQUITTO


class Broker:
    """One mosquitto process bound to 127.0.0.1 only. `extra` is appended to the listener block."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "", persistence: bool = False,
                 anonymous: bool = True) -> None:
        self.binary = require_mosquitto()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.persistence = persistence
        self.anonymous = anonymous
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"

    def write_conf(self) -> None:
        lines = [
            "user root" if os.geteuid() == 0 else "",
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            self.extra,
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1" if self.persistence else "",
            "max_queued_messages 0",
            "max_inflight_messages 20",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        self.conf.write_text("\n".join(line for line in lines if line) + "\n")

    def start(self) -> Broker:
        self.write_conf()
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                pytest.fail(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on 127.0.0.1:{self.port}\n{self.log_text()}")

    def wait_listening(self, port: int) -> None:
        """Wait for an extra listener from `extra` (listeners open one after another)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on 127.0.0.1:{port}\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def add_user(password_file: Path, user: str, password: str) -> None:
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.fail(f"mosquitto_passwd not found at {MOSQUITTO_PASSWD} (it ships with mosquitto)")
    flags = ["-b"] if password_file.exists() else ["-c", "-b"]
    subprocess.run([MOSQUITTO_PASSWD, *flags, str(password_file), user, password], check=True,
                   capture_output=True)
