#!/usr/bin/env python3
"""Check doorbell-edge's MQTT discovery against a REAL Home Assistant on this machine (a dev tool, never a test).

CI does not install Home Assistant (too big and slow); `tests/mqtt/test_discovery.py` pins what this tool taught us.
Run this after changing discovery payloads, topics or the state/doorbell feeds, and before bumping the Home
Assistant version named in docs/events.md.

Once, a separate venv (gitignored; Home Assistant 2024.3 is the newest that runs on Python 3.11):

    python3 -m venv .venv-ha
    .venv-ha/bin/pip install "homeassistant==2024.3.3" "paho-mqtt==1.6.1" \\
        "home-assistant-frontend==20240307.0" "Pillow==10.2.0" "aiohttp-fast-url-dispatcher==0.3.0" \\
        "aiohttp-zlib-ng==0.3.1" "aiohttp_cors==0.7.0" "ifaddr==0.2.0" "janus==1.0.0" \\
        "psutil-home-assistant==0.0.1" "securetar==2024.2.1" \\
        "SQLAlchemy==2.0.27" "fnv-hash-fast==0.5.0" "numpy==1.26.0" "PyTurboJPEG==1.7.1" "josepy<2"

(the extra pins are the requirements of the mqtt integration and of the integrations Home Assistant always loads
(analytics imports the recorder, hence SQLAlchemy; josepy 2 broke the acme package that http imports);
Home Assistant runs with --skip-pip here, so it installs nothing and reaches nothing but 127.0.0.1). For another
Home Assistant release, `tools/ha_check.py --print-requirements --hass VENV/bin/hass` prints the pins to install
into that venv, read from its integrations' manifests. Then:

    .venv/bin/python tools/ha_check.py [--hass .venv-ha/bin/hass] [--workdir /tmp/ha-check] [--keep]

A newer Home Assistant needs a newer Python (2025.4.4 was checked with Python 3.13.0). Install it with its own
constraints file, or pip backtracks for a long time through sdists it has to build:

    python3.13 -m venv .venv-ha13
    .venv-ha13/bin/pip download --no-deps -d /tmp/ha homeassistant==2025.4.4
    unzip -o -d /tmp/ha /tmp/ha/homeassistant-2025.4.4-py3-none-any.whl homeassistant/package_constraints.txt
    .venv-ha13/bin/pip install -c /tmp/ha/homeassistant/package_constraints.txt \
        /tmp/ha/homeassistant-2025.4.4-py3-none-any.whl
    .venv/bin/python tools/ha_check.py --print-requirements --hass .venv-ha13/bin/hass   # then run that line
    .venv/bin/python tools/ha_check.py --hass .venv-ha13/bin/hass

It starts, all on 127.0.0.1 and in a temporary directory:

1. its own mosquitto on a free port;
2. Home Assistant with a minimal configuration (http bound to 127.0.0.1, api, logger; no default_config, so no
   cloud, no discovery, no location lookup), onboards a user through the REST API and adds the MQTT integration
   through its config flow (discovery on, prefix `homeassistant`);
3. the daemon (`python -m edge run`, demo camera, the demo visitor's face enrolled as "grace" so both
   `known_face` and `unknown_face` can occur), then `doorbell-edge ring`.

It checks that every entity the device announces is in Home Assistant's entity registry (platform mqtt, the
announced unique_id, on the device `doorbell-edge_<id>`), that each has a state, that the state follows the
device (motion and occupancy ON then OFF, the doorbell event entity firing ring / known_face / unknown_face,
numeric sensors numeric), that pressing each announced button runs the device's command, that stopping the daemon
makes every entity `unavailable`, and that a Home Assistant restart with the retained discovery configs wiped gets
the entities back (the device answers `homeassistant/status` = online). Home Assistant's log is scanned for any
MQTT warning or error. It prints the entities with the states seen and exits 0 if all is well, 1 with the list of
problems otherwise. --keep leaves the work directory (HA log: <workdir>/ha/home-assistant.log).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge import __version__  # noqa: E402
from edge.mqtt.discovery import DeviceInfo, discovery_payloads  # noqa: E402
from edge.mqtt.topics import Topics  # noqa: E402

DEVICE_ID = "hacheck"
DEVICE_NAME = "Front door"
HOST = "127.0.0.1"
# Home Assistant's core logs every state change at DEBUG: the complete record of what each entity went through.
STATE_LINE = re.compile(r"^(?P<time>\S+ \S+) .*Bus:Handling <Event state_changed\[L\]: "
                        r"entity_id=(?P<entity>[a-z_]+\.[a-z0-9_]+), "
                        r"old_state=.*?, new_state=<state (?P=entity)=(?P<state>[^;@>]*?)(?P<attrs>;.*?)? @ ")
LOG_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) \([^)]*\) \[(?P<logger>[^\]]+)\] (?P<msg>.*)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # keep polling; say the last error if it never works
            last_exc = exc
            result = None
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_exc})"
                                                                               if last_exc else ""))


class Http:
    """The few REST calls the check needs, stdlib only, to 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.base = f"http://{HOST}:{port}"
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None) -> Any:
        headers = {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
            text = response.read().decode()
        return json.loads(text) if text else None

    def template(self, template: str) -> str:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.base + "/api/template", data=json.dumps({"template": template}).encode(),
                                         headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
            return str(response.read().decode())

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.call("GET", "/api/states")}


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="ha-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.hass_bin = Path(args.hass)
        self.broker_port = free_port()
        self.http_port = free_port()
        self.http = Http(self.http_port)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.problems: list[str] = []
        self.ha_dir = self.work / "ha"
        self.ha_logs: list[Path] = []  # one per start: Home Assistant rotates its own log file on every start
        self.edge_dir = self.work / "edge"
        self.edge_config = self.edge_dir / "config.yaml"
        self.edge_log = self.edge_dir / "daemon.log"
        self.topics = Topics(prefix=f"doorbell-edge/{DEVICE_ID}", device_id=DEVICE_ID)
        self.announced = self._announced()
        self.entity_of: dict[str, str] = {}  # unique_id -> entity_id

    # --- helpers -------------------------------------------------------------------------------

    def problem(self, text: str) -> None:
        print(f"PROBLEM: {text}", flush=True)
        self.problems.append(text)

    def say(self, text: str) -> None:
        print(f"-- {text}", flush=True)

    def _announced(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """unique_id -> (component, config) for every entity the daemon will announce with this tool's config."""
        info = DeviceInfo(topics=self.topics, name=DEVICE_NAME, sw_version=__version__, snapshot=self.args.snapshot)
        found = {}
        for topic, payload in discovery_payloads(info):
            if payload:
                body = json.loads(payload)
                found[body["unique_id"]] = (topic.split("/")[1], body)
        return found

    def start(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        handle = log.open("ab")
        self.procs[name] = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                            env={**os.environ, **(env or {})}, start_new_session=True)
        handle.close()

    def stop(self, name: str, timeout: float = 60.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def mqtt_pub(self, topic: str, payload: str, retain: bool = False) -> None:
        argv = ["mosquitto_pub", "-h", HOST, "-p", str(self.broker_port), "-q", "1", "-t", topic,
                *(["-m", payload] if payload else ["-n"]), *(["-r"] if retain else [])]
        subprocess.run(argv, check=True, timeout=10)

    def retained(self, topic_filter: str) -> dict[str, str]:
        out = subprocess.run(["mosquitto_sub", "-h", HOST, "-p", str(self.broker_port), "-t", topic_filter, "-v",
                              "--retained-only", "-W", "2"], capture_output=True, text=True, timeout=10)
        found = {}
        for line in out.stdout.splitlines():
            topic, _, payload = line.partition(" ")
            found[topic] = payload
        return found

    # --- the pieces ------------------------------------------------------------------------------

    def start_broker(self) -> None:
        bdir = self.work / "mosquitto"
        bdir.mkdir(exist_ok=True)
        conf = bdir / "mosquitto.conf"
        lines = [f"listener {self.broker_port} {HOST}", "allow_anonymous true", "persistence false",
                 f"log_dest file {bdir / 'mosquitto.log'}", "connection_messages true"]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        conf.write_text("\n".join(lines) + "\n")
        self.start("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                   bdir / "stdout.log")

        def listening() -> bool:
            with socket.create_connection((HOST, self.broker_port), timeout=0.5):
                return True

        wait_for("mosquitto", listening, 15, 0.1)
        self.say(f"mosquitto on {HOST}:{self.broker_port}")

    def write_ha_config(self) -> None:
        self.ha_dir.mkdir(exist_ok=True)
        # Everything set, so nothing is looked up; only what the check needs is loaded.
        (self.ha_dir / "configuration.yaml").write_text(f"""\
homeassistant:
  name: ha-check
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
  internal_url: "http://{HOST}:{self.http_port}"
http:
  server_host: {HOST}
  server_port: {self.http_port}
api:
logger:
  default: warning
  logs:
    homeassistant.core: debug
    homeassistant.components.mqtt: debug
""")

    def start_ha(self) -> None:
        self.ha_logs.append(self.ha_dir / f"home-assistant-{len(self.ha_logs) + 1}.log")
        self.start("hass", [str(self.hass_bin), "-c", str(self.ha_dir), "--skip-pip", "--log-file",
                            str(self.ha_logs[-1]), "--log-no-color"], self.ha_dir / "stdout.log")
        wait_for("Home Assistant's HTTP API", lambda: self.http.call("GET", "/api/onboarding") is not None, 180, 1.0)
        wait_for("Home Assistant to finish starting", self._ha_running, 120, 1.0)
        self.say(f"Home Assistant up on http://{HOST}:{self.http_port}")

    def _ha_running(self) -> bool:
        if self.http.token is None:
            return True  # before onboarding the API needs a token; the onboarding views answer once started
        return bool(self.http.call("GET", "/api/config").get("state") == "RUNNING")

    def onboard(self) -> None:
        client_id = f"http://{HOST}:{self.http_port}/"
        reply = self.http.call("POST", "/api/onboarding/users", {"client_id": client_id, "name": "Check",
                                                                  "username": "check", "password": "check-only",
                                                                  "language": "en"})
        token = self.http.call("POST", "/auth/token", form={"grant_type": "authorization_code",
                                                            "code": reply["auth_code"], "client_id": client_id})
        self.http.token = token["access_token"]
        self.say("onboarded a user, have a token")

    def add_mqtt(self) -> None:
        flow = self.http.call("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        if flow.get("type") == "form":
            flow = self.http.call("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                                  {"broker": HOST, "port": self.broker_port})
        if flow.get("type") != "create_entry":
            raise RuntimeError(f"MQTT config flow did not create an entry: {flow}")
        entries = self.http.call("GET", "/api/config/config_entries/entry?domain=mqtt")
        wait_for("the MQTT config entry to load", lambda: all(
            e["state"] == "loaded" for e in self.http.call("GET", "/api/config/config_entries/entry?domain=mqtt")),
            30)
        self.say(f"MQTT integration added ({len(entries)} entry) -> broker {HOST}:{self.broker_port}")

    def write_edge_config(self) -> None:
        self.edge_dir.mkdir(exist_ok=True)
        self.edge_config.write_text(f"""\
device:
  id: {DEVICE_ID}
  name: {DEVICE_NAME}
mqtt:
  host: {HOST}
  port: {self.broker_port}
  state_interval_s: 5
  keepalive_s: 5
  snapshot: {"true" if self.args.snapshot else "false"}
""")

    def edge_env(self) -> dict[str, str]:
        return {"DOORBELL_EDGE_STATE_DIR": str(self.edge_dir / "state")}

    def edge(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge", *argv, "--config", str(self.edge_config)], cwd=ROOT,
                              env={**os.environ, **self.edge_env()}, capture_output=True, text=True, timeout=300)

    def enroll_visitor(self) -> None:
        from edge.camera.demo import visitor_photo_path

        today = datetime.now(UTC).astimezone().date()
        done = self.edge("faces", "enroll", "grace", str(visitor_photo_path()), "--consent-by", "grace",
                         "--consent-date", today.isoformat(), "--consent-until",
                         (today + timedelta(days=30)).isoformat(), "--replace")  # a reused --workdir enrolled grace
        if done.returncode != 0:
            self.problem(f"could not enroll the demo visitor: {done.stderr[-300:]}")
        else:
            self.say("enrolled the demo visitor as 'grace': from now on the visitor is a known face")

    def start_daemon(self, seconds: float) -> None:
        self.start("edge", [sys.executable, "-m", "edge", "run", "--config", str(self.edge_config), "--for",
                            str(seconds)], self.edge_log, self.edge_env())

    # --- reading Home Assistant ------------------------------------------------------------------

    def registry(self, name: str) -> list[dict[str, Any]]:
        path = self.ha_dir / ".storage" / name
        if not path.exists():
            return []
        data = json.loads(path.read_text())["data"]
        return list(data.get("entities") or data.get("devices") or [])

    def ha_log_lines(self, since_start: int = 0) -> list[str]:
        return [line for log in self.ha_logs[since_start:] if log.exists()
                for line in log.read_text(errors="replace").splitlines()]

    def transitions(self, since_start: int = 0, timed: bool = False) -> dict[str, list[Any]]:
        """entity_id -> [(state, attributes text)] in order, from HA's log (everything, not just what we polled);
        with `timed`, [(time, state)]."""
        seen: dict[str, list[Any]] = defaultdict(list)
        for line in self.ha_log_lines(since_start):
            match = STATE_LINE.search(line)
            if match:
                seen[match["entity"]].append((match["time"], match["state"]) if timed
                                             else (match["state"], match["attrs"] or ""))
        return seen

    def stale_flashes(self) -> list[str]:
        """Binary sensors that came back from unavailable showing ON for under a second before the device's fresh
        state said OFF: the retained/last state of the previous run shown as current (an automation on "to: on"
        fires). Caused by the device saying `online` before it publishes its state."""
        from datetime import datetime

        found = []
        for object_id in ("motion", "occupancy"):
            entity = self.entity_of.get(f"doorbell-edge_{DEVICE_ID}_{object_id}")
            seen = self.transitions(timed=True).get(entity or "", [])
            for (_, before), (t_on, on), (t_off, off) in zip(seen, seen[1:], seen[2:], strict=False):
                if before == "unavailable" and on == "on" and off == "off":
                    lasted = (datetime.fromisoformat(t_off) - datetime.fromisoformat(t_on)).total_seconds()
                    if lasted < 1.0:
                        found.append(f"{entity}: unavailable -> on -> off within {lasted * 1000:.0f} ms at {t_on}")
        return found

    def log_problems(self) -> list[str]:
        found = []
        for line in self.ha_log_lines():
            match = LOG_PROBLEM.match(line)
            if not match:
                continue
            logger, msg = match["logger"], match["msg"]
            if ("mqtt" in logger or DEVICE_ID in msg or "doorbell" in msg.lower()
                    or logger.startswith("homeassistant.components.sensor")
                    or logger.startswith("homeassistant.helpers.entity")
                    or logger.startswith("homeassistant.helpers.template")):
                found.append(f"[{logger}] {msg[:400]}")
        return found

    def our_entities(self) -> dict[str, str]:
        """unique_id -> entity_id for this device's entities in the entity registry."""
        prefix = f"doorbell-edge_{DEVICE_ID}_"
        return {e["unique_id"]: e["entity_id"] for e in self.registry("core.entity_registry")
                if e.get("platform") == "mqtt" and str(e.get("unique_id", "")).startswith(prefix)}

    # --- the check -------------------------------------------------------------------------------

    def check_registry(self) -> None:
        entities = wait_for("every announced entity in the entity registry",
                            lambda: (lambda found: found if set(self.announced) <= set(found) else None)(
                                self.our_entities()), 60, 1.0)
        extra = set(entities) - set(self.announced)
        if extra:
            self.problem(f"entities in HA that the device no longer announces: {sorted(extra)}")
        self.entity_of = {u: entities[u] for u in self.announced}
        registry = {e["unique_id"]: e for e in self.registry("core.entity_registry") if e["unique_id"] in entities}
        devices = {d["id"]: d for d in self.registry("core.device_registry")}
        for unique_id, (component, body) in self.announced.items():
            entry = registry[unique_id]
            if not entry["entity_id"].startswith(component + "."):
                self.problem(f"{unique_id}: announced as {component} but HA made {entry['entity_id']}")
            device = devices.get(entry.get("device_id") or "")
            if device is None:
                self.problem(f"{entry['entity_id']}: not attached to a device")
                continue
            wanted = [["mqtt", i] for i in body["device"]["identifiers"]]
            if device["identifiers"] != wanted or device["name"] != DEVICE_NAME:
                self.problem(f"{entry['entity_id']}: device {device['identifiers']} {device['name']!r}, "
                             f"wanted {wanted} {DEVICE_NAME!r}")
            if device.get("sw_version") != __version__:
                self.problem(f"{entry['entity_id']}: device sw_version {device.get('sw_version')!r}")
            category = body.get("entity_category")
            if entry.get("entity_category") != category:
                self.problem(f"{entry['entity_id']}: entity_category {entry.get('entity_category')!r}, "
                             f"announced {category!r}")
            if entry.get("disabled_by") or entry.get("hidden_by"):
                self.problem(f"{entry['entity_id']}: disabled/hidden by {entry.get('disabled_by')}"
                             f"/{entry.get('hidden_by')}")
        self.say(f"all {len(self.announced)} announced entities are in the registry")

    def check_states_named(self) -> None:
        states = self.http.states()
        for unique_id, (_, body) in self.announced.items():
            entity_id = self.entity_of[unique_id]
            state = states.get(entity_id)
            if state is None:
                self.problem(f"{entity_id}: in the registry but has no state")
                continue
            name = body.get("name")
            wanted = DEVICE_NAME if name is None else f"{DEVICE_NAME} {name}"
            if state["attributes"].get("friendly_name") != wanted:
                self.problem(f"{entity_id}: friendly_name {state['attributes'].get('friendly_name')!r}, "
                             f"wanted {wanted!r}")
            for key in ("device_class", "unit_of_measurement", "state_class", "icon", "event_types"):
                if key in body and state["attributes"].get(key) != body[key]:
                    self.problem(f"{entity_id}: attribute {key} is {state['attributes'].get(key)!r}, "
                                 f"announced {body[key]!r}")
            if state["state"] == "unavailable":
                self.problem(f"{entity_id}: unavailable while the daemon runs")

    def by_key(self, object_id: str) -> str:
        return self.entity_of[f"doorbell-edge_{DEVICE_ID}_{object_id}"]

    def check_visitor_and_ring(self, timeout: float) -> None:
        motion, occupancy, doorbell = self.by_key("motion"), self.by_key("occupancy"), self.by_key("doorbell")

        def seen(entity: str) -> list[str]:
            return [state for state, _ in self.transitions()[entity]]

        for entity, what in ((motion, "motion"), (occupancy, "occupancy")):
            try:
                # Explicit OFF (never stuck at unknown), ON when the visitor comes; motion also ends.
                wait_for(f"{what} OFF and ON (demo visitor)", lambda e=entity: {"off", "on"} <= set(seen(e)), timeout)
            except TimeoutError as exc:
                self.problem(f"{exc}: {seen(entity)}")
        try:
            wait_for("motion ON then back OFF", lambda: "off" in seen(motion)[seen(motion).index("on"):], timeout)
        except (TimeoutError, ValueError) as exc:
            self.problem(f"{exc}: {seen(motion)}")
        self.expect_fired("unknown_face", timeout)
        rung = self.edge("ring")
        if rung.returncode != 0:
            self.problem(f"doorbell-edge ring failed: {rung.stderr[-300:]}")
        self.expect_fired("ring", 20)
        attributes = self.http.states()[doorbell]["attributes"]
        for key in ("event_id", "seq", "camera", "ts"):
            if key not in attributes:
                self.problem(f"{doorbell}: attribute {key} missing after a ring: {attributes}")

    def expect_fired(self, event_type: str, timeout: float, since_start: int = 0) -> None:
        doorbell = self.by_key("doorbell")
        try:
            wait_for(f"{doorbell} to fire {event_type}", lambda: event_type in self.fired(doorbell, since_start),
                     timeout)
            self.say(f"{doorbell} fired {event_type}")
        except TimeoutError as exc:
            self.problem(f"{exc}; fired: {sorted(self.fired(doorbell, since_start))}")

    def fired(self, entity_id: str, since_start: int = 0) -> set[str]:
        types = set()
        for state, attrs in self.transitions(since_start)[entity_id]:
            match = re.search(r"[;,] event_type=([a-z_]+)", attrs)
            if match and state not in ("unknown", "unavailable"):
                types.add(match[1])
        return types

    def check_sensors(self) -> None:
        states = self.http.states()
        for unique_id, (component, body) in self.announced.items():
            entity_id = self.entity_of[unique_id]
            value = states[entity_id]["state"]
            if component == "sensor" and "state_class" in body:
                try:
                    float(value)
                except ValueError:
                    if not (value == "unknown" and unique_id.endswith("_inference_ms")):
                        self.problem(f"{entity_id}: numeric sensor shows {value!r}")
            if component == "binary_sensor" and value not in ("on", "off"):
                self.problem(f"{entity_id}: binary sensor shows {value!r}")

    def press_buttons(self) -> None:
        for unique_id, (component, body) in self.announced.items():
            if component != "button":
                continue
            entity_id = self.entity_of[unique_id]
            command = body["command_topic"].rsplit("/", 1)[-1]
            line = f"command {command} accepted"
            before = self.edge_log.read_text(errors="replace").count(line)
            self.http.call("POST", "/api/services/button/press", {"entity_id": entity_id})
            try:
                wait_for(f"the daemon to accept command {command} from {entity_id}",
                         lambda b=before, t=line: self.edge_log.read_text(errors="replace").count(t) > b, 15)
                self.say(f"{entity_id} -> {body['command_topic']} accepted by the daemon")
            except TimeoutError as exc:
                self.problem(f"{exc}; daemon log: {self.edge_log.read_text(errors='replace')[-600:]}")
            if command == "snapshot":
                self.check_image()

    def check_image(self) -> None:
        image = self.by_key("snapshot")

        def fetched() -> bytes | None:
            if self.http.states()[image]["state"] in ("unknown", "unavailable"):
                return None
            request = urllib.request.Request(f"{self.http.base}/api/image_proxy/{image}",
                                             headers={"Authorization": f"Bearer {self.http.token}"})
            with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
                return bytes(response.read()) if response.headers.get("Content-Type") == "image/jpeg" else None

        try:
            jpeg = wait_for(f"{image} to show the snapshot", fetched, 20)
            if not jpeg.startswith(b"\xff\xd8"):
                self.problem(f"{image}: not a JPEG")
            else:
                self.say(f"{image} serves a {len(jpeg)}-byte JPEG")
        except TimeoutError as exc:
            self.problem(str(exc))

    def all_available(self) -> bool:
        states = self.http.states()
        return all(states.get(e, {}).get("state") not in (None, "unavailable") for e in self.entity_of.values())

    def check_unavailable(self, why: str, timeout: float = 20) -> None:
        def all_unavailable() -> bool:
            states = self.http.states()
            return all(states[e]["state"] == "unavailable" for e in self.entity_of.values())

        try:
            wait_for(f"every entity unavailable after {why}", all_unavailable, timeout)
            self.say(f"{why}: every entity is unavailable")
        except TimeoutError as exc:
            states = self.http.states()
            self.problem(f"{exc}: {[(e, states[e]['state']) for e in self.entity_of.values()]}")

    def daemon_running(self, starts_before: int) -> bool:
        return self.edge_log.read_text(errors="replace").count(" running: cameras ") > starts_before

    def check_crash(self) -> None:
        """A killed daemon says nothing: the broker's last will (offline) must make everything unavailable."""
        starts = self.edge_log.read_text(errors="replace").count(" running: cameras ")
        self.start_daemon(self.args.run_seconds)
        wait_for("the daemon to run", lambda: self.daemon_running(starts), 120)
        wait_for("the entities to be available again", self.all_available, 60)
        proc = self.procs.pop("edge")
        proc.kill()
        proc.wait(10)
        self.check_unavailable("the daemon was killed (last will)", timeout=30)

    def check_ha_restart(self) -> None:
        self.enroll_visitor()
        self.start_daemon(self.args.run_seconds)
        wait_for("the daemon to be online", lambda: self.retained(self.topics.availability).get(
            self.topics.availability) == "online", 60)
        self.stop("hass")
        # Wipe the retained discovery configs: the entities can only come back if the device answers
        # homeassistant/status = online by announcing itself again.
        for topic in self.retained("homeassistant/#"):
            if topic.endswith("/config"):
                self.mqtt_pub(topic, "", retain=True)
        if any(t.endswith("/config") for t in self.retained("homeassistant/#")):
            self.problem("could not clear the retained discovery configs")
        self.say("Home Assistant stopped, retained discovery configs wiped; starting it again")
        mark = self.edge_log.read_text(errors="replace").count("Home Assistant is online")
        self.start_ha()
        try:
            wait_for("the entities to come back after Home Assistant's restart", self.all_available, 60)
            self.say("after the restart every entity is back and available")
        except TimeoutError as exc:
            self.problem(str(exc))
        self.expect_fired("known_face", self.args.visitor_timeout, since_start=len(self.ha_logs) - 1)
        if self.edge_log.read_text(errors="replace").count("Home Assistant is online") <= mark:
            self.problem("the daemon did not log re-sending discovery on homeassistant/status online")
        if not any(t.endswith("/config") for t in self.retained("homeassistant/#")):
            self.problem("the daemon did not re-publish its discovery configs")

    def report(self) -> None:
        transitions = self.transitions()
        states = self.http.states() if "hass" in self.procs else {}
        print("\nEntities (entity_id, platform, states seen in order, last):")
        for unique_id, (component, _) in sorted(self.announced.items(), key=lambda x: self.entity_of.get(x[0], "")):
            entity_id = self.entity_of.get(unique_id, f"(missing: {unique_id})")
            seen: list[str] = []
            for state, attrs in transitions.get(entity_id, []):
                match = re.search(r"[;,] event_type=([a-z_]+)", attrs)
                label = f"{state[:19]}[{match[1]}]" if match and component == "event" else state
                if not seen or seen[-1] != label:
                    seen.append(label)
            if len(seen) > 14:
                seen = [*seen[:6], "...", *seen[-7:]]
            last = states.get(entity_id, {}).get("state", "?")
            print(f"  {entity_id:45} mqtt/{component:13} {' -> '.join(seen)}   (now {last})")

    def run(self) -> int:
        if not self.hass_bin.exists():
            print(f"no Home Assistant at {self.hass_bin}: see the top of {Path(__file__).name}", file=sys.stderr)
            return 2
        print(f"work directory: {self.work}")
        try:
            self.start_broker()
            self.write_ha_config()
            self.start_ha()
            self.onboard()
            self.add_mqtt()
            self.write_edge_config()
            self.start_daemon(self.args.run_seconds)
            self.check_registry()
            self.check_states_named()
            self.check_visitor_and_ring(self.args.visitor_timeout)
            self.check_sensors()
            self.press_buttons()
            code = self.stop("edge", 60)
            if code != 0:
                self.problem(f"the daemon exited with {code}: see {self.edge_log}")
            self.check_unavailable("the daemon stopped")
            self.check_crash()
            self.check_ha_restart()
            self.stop("edge", 60)
            self.check_unavailable("the daemon stopped again")
            self.report()
        except Exception as exc:  # any failure fails the check; clean up
            self.problem(f"{type(exc).__name__}: {exc}")
        finally:
            for name in reversed(list(self.procs)):
                self.stop(name)
        for line in self.log_problems():
            self.problem(f"HA log: {line}")
        for line in self.stale_flashes():
            print(f"WARNING (stale state after reconnect): {line}")
        if self.problems:
            print(f"\nFAILED: {len(self.problems)} problem(s); work directory {self.work}")
            return 1
        print(f"\nOK: Home Assistant created and updated all {len(self.announced)} entities as announced")
        if not self.args.keep and not self.args.workdir:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0


# Run with the Home Assistant venv's python: the pip pins of what a check run loads, from the manifests.
REQUIREMENTS_SCRIPT = """
import json, pathlib, homeassistant, homeassistant.bootstrap as b
root = pathlib.Path(homeassistant.__file__).parent / "components"
todo = set().union(*(getattr(b, n, set()) for n in ("CORE_INTEGRATIONS", "LOGGING_INTEGRATIONS",
                   "FRONTEND_INTEGRATIONS", "DEFAULT_INTEGRATIONS")))
todo |= {"mqtt", "http", "api", "onboarding", "recorder", "camera", "image", "button", "event", "sensor",
         "binary_sensor"}
todo.discard("sentry")  # only with a sentry config; never wanted here
seen, pins = set(), set()
# camera (loaded early) imports numpy, which is pinned in the constraints rather than in a manifest
constraints = pathlib.Path(homeassistant.__file__).parent / "package_constraints.txt"
pins.update(l for l in constraints.read_text().splitlines() if l.startswith("numpy=="))
while todo:
    name = todo.pop()
    manifest = root / name / "manifest.json"
    if name in seen or not manifest.exists():
        continue
    seen.add(name)
    data = json.loads(manifest.read_text())
    pins.update(data.get("requirements", []))
    todo.update(data.get("dependencies", []))
print(" ".join(repr(p) for p in sorted(pins)))
"""


def print_requirements(hass: Path) -> int:
    python = hass.with_name("python")
    if not python.exists():
        print(f"no python beside {hass}", file=sys.stderr)
        return 2
    pins = subprocess.run([str(python), "-c", REQUIREMENTS_SCRIPT], capture_output=True, text=True, check=True)
    print(f"{hass.parent}/pip install {pins.stdout.strip()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hass", default=str(ROOT / ".venv-ha" / "bin" / "hass"),
                        help="the hass executable of a Home Assistant venv (default: .venv-ha/bin/hass)")
    parser.add_argument("--workdir", help="work directory (default: a new one under the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory even when all is well")
    parser.add_argument("--run-seconds", type=float, default=600, help="daemon --for (a safety stop)")
    parser.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                        help="run the daemon with mqtt.snapshot false (no image entity, no snapshot button)")
    parser.add_argument("--visitor-timeout", type=float, default=90,
                        help="seconds to wait for the demo visitor to cause motion, occupancy and faces")
    parser.add_argument("--print-requirements", action="store_true",
                        help="print the pip install line for the --hass venv's integrations, then exit")
    args = parser.parse_args(argv)
    if args.print_requirements:
        return print_requirements(Path(args.hass))
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
