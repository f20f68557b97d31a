"""The only paho-mqtt user: one broker connection at a time, TLS and auth, reconnect with back-off, PUBACK callbacks."""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import ConfigError, EdgeError

log = logging.getLogger(__name__)

PROTOCOLS = {"mqttv5": paho.MQTTv5, "mqttv311": paho.MQTTv311}
CONNACK_TIMEOUT_S = 10.0
STABLE_S = 10.0  # a session this long resets the back-off
INFLIGHT = 20  # QoS 1 messages paho keeps in flight; more wait in paho's queue, in order
# CONNACK codes that mean "your credentials are wrong": 3.1.1 (4, 5) and 5.0 (134, 135).
AUTH_FAILURES = {4, 5, 134, 135}

Ack = Callable[[bool, str], None]  # (delivered, reason)


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class LinkSettings:
    """Everything the connection needs; `password` is read on every attempt (files and credentials change)."""

    host: str
    port: int
    client_id: str
    will_topic: str
    will_payload: str
    protocol: str = "mqttv5"
    keepalive_s: int = 60
    username: str | None = None
    password: Callable[[], str | None] | None = None
    tls: TlsSettings | None = None
    subscriptions: tuple[str, ...] = ()
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    # False: the last will is not retained either (the built-in demo leaves nothing behind on a broker).
    will_retain: bool = True
    password_hint: str = field(default="the password file", compare=False)


def next_delay(previous: float | None, low: float, high: float) -> float:
    """Back-off base: `low` after the first failure, doubling after each further one, never above `high`."""
    return low if previous is None else min(high, previous * 2.0)


def jittered(base: float, r: float, high: float) -> float:
    """Spread reconnects of many devices: +-20 % around the base (`r` in [0, 1)), still never above `high`."""
    return min(high, base * (0.8 + 0.4 * r))


def tls_file_problem(key: str, path: Path | None) -> str | None:
    """Why `path` (the config key `key`) cannot be used as a TLS file, naming both; None when it can be read."""
    if path is None:
        return None
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return f"{key}: file not found: {path}"
    except IsADirectoryError:
        return f"{key}: {path} is a directory, not a PEM file"
    except OSError as exc:
        return f"{key}: cannot read {path}: {exc.strerror or exc}"


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Verification on unless `insecure`: the broker certificate must chain to ca_file and match the host name.

    A file that is missing or not PEM raises ConfigError naming the config key and the file (ssl's own errors
    say only "No such file or directory" or "[X509] PEM lib").
    """
    files = (("mqtt.tls.ca_file", tls.ca_file), ("mqtt.tls.cert_file", tls.cert_file),
             ("mqtt.tls.key_file", tls.key_file))
    problems = [p for p in (tls_file_problem(key, path) for key, path in files) if p]
    if problems:
        raise ConfigError(problems)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"mqtt.tls.ca_file: {tls.ca_file} holds no usable PEM CA certificate: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"mqtt.tls.cert_file/key_file: {tls.cert_file} and {tls.key_file} are not a "
                              f"matching PEM certificate and key: {exc}") from exc
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def build_client(s: LinkSettings, inflight: int) -> paho.Client:
    """A fresh paho client for one connection attempt: protocol, last will, credentials, TLS (no callbacks yet)."""
    protocol = PROTOCOLS.get(s.protocol)
    if protocol is None:
        raise ValueError(f"unknown MQTT protocol {s.protocol!r}; use one of {', '.join(PROTOCOLS)}")
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=s.client_id,
        protocol=protocol,
        clean_session=True if protocol == paho.MQTTv311 else None,
        reconnect_on_failure=False,
    )
    if log.isEnabledFor(logging.DEBUG):
        # paho logs an ordinary lost connection (and a loop call racing it) at ERROR; our own messages say it
        # better and at the right level, so paho's own lines are kept at DEBUG only.
        paho_log = logging.getLogger(f"{__name__}.paho")
        client.on_log = lambda _client, _userdata, _level, line: paho_log.debug("%s", line)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.will_set(s.will_topic, s.will_payload, qos=1, retain=s.will_retain)
    if s.username is not None:
        password = s.password() if s.password is not None else None
        client.username_pw_set(s.username, password)
    if s.tls is not None:
        if s.tls.insecure:
            log.warning(
                "MQTT: TLS VERIFICATION IS OFF (mqtt.tls.insecure): anyone between this device and %s can read "
                "and forge events. Use it for testing only.", s.host
            )
        client.tls_set_context(tls_context(s.tls))
        client.tls_insecure_set(s.tls.insecure)
    return client


class Link:
    """A broker connection kept alive by its own thread: connect, serve, and after any failure back off and retry.

    A fresh paho client is made for every attempt, so nothing paho buffers survives a disconnect: the outbox is the
    only queue, and the publisher re-sends what was not acknowledged. Callbacks run on the link's thread and must
    return quickly.
    """

    def __init__(
        self,
        settings: LinkSettings,
        *,
        on_connected: Callable[[], None] = lambda: None,
        on_disconnected: Callable[[], None] = lambda: None,
        on_message: Callable[[str, bytes], None] = lambda topic, payload: None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._rng = rng
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._client: paho.Client | None = None  # set only while connected
        self._pending: dict[int, Ack | None] = {}
        self._early: dict[int, tuple[bool, str]] = {}
        self._refused: str | None = None
        self._accepted_at: float | None = None
        self._ended = threading.Event()
        self._end_reason = "closed"
        self._inflight = INFLIGHT
        self.attempts = 0
        self.connections = 0
        self.last_error: str | None = None
        self.failures = 0  # failed attempts since the last accepted connection
        self._told: set[str] = set()  # kinds of failure already logged at their level during this outage

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._client is not None

    # --- publishing ---------------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False, on_ack: Ack | None = None
    ) -> bool:
        """Hand a message to the current connection; False when there is none (nothing is buffered here).

        `on_ack(delivered, reason)` runs when the broker acknowledges a QoS 1 message (delivered is False when an
        MQTT 5 broker answered with a failure reason code).
        """
        with self._lock:
            client = self._client
        if client is None:
            return False
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, OSError) as exc:
            log.error("MQTT: cannot publish to %s: %s", topic, exc)
            return False
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if qos == 0:
            with self._lock:
                self._early.pop(info.mid, None)
            if on_ack is not None:
                on_ack(True, "qos0")
            return True
        early: tuple[bool, str] | None
        with self._lock:
            # The PUBACK may have been processed before publish() returned: then it waits in _early.
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = on_ack
        if early is not None and on_ack is not None:
            on_ack(*early)
        return True

    # --- the connection thread ----------------------------------------------------------------------

    def _run(self) -> None:
        delay: float | None = None
        while not self._stop.is_set():
            self.attempts += 1
            healthy = self._attempt()
            if self._stop.is_set():
                break
            if healthy:
                delay = None  # a connection that lasted starts the back-off afresh
            delay = next_delay(delay, self.settings.reconnect_min_s, self.settings.reconnect_max_s)
            wait = jittered(delay, self._rng(), self.settings.reconnect_max_s)
            # Every attempt at DEBUG only: the outage was logged once, and the publisher summarises it.
            log.debug("MQTT: reconnecting to %s:%s in %.2fs (attempt %d)", self.settings.host,
                      self.settings.port, wait, self.attempts + 1)
            self._stop.wait(wait)

    def _attempt(self) -> bool:
        """One connection attempt and, if it works, the session; True if the session lasted STABLE_S or more.

        A broker that accepts and then drops us at once (an ACL refusing our topics, a duplicate client id) keeps
        backing off instead of being hammered every reconnect_min_s.
        """
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            client = self._make_client()
        except (EdgeError, OSError, ssl.SSLError, ValueError) as exc:
            self._fail(f"MQTT: cannot prepare the connection to {where}: {exc}", kind="prepare")
            return False
        try:
            if s.protocol == "mqttv5":
                client.connect(s.host, s.port, s.keepalive_s, clean_start=True)
            else:
                client.connect(s.host, s.port, s.keepalive_s)
        except ssl.SSLCertVerificationError as exc:
            self._fail(
                f"MQTT: TLS certificate of broker {where} NOT trusted, refusing to connect: "
                f"{exc.verify_message or exc} (check mqtt.tls.ca_file and that the certificate names {s.host})",
                kind="tls-untrusted",
            )
            return False
        except ssl.SSLError as exc:
            self._fail(f"MQTT: TLS handshake with broker {where} failed: {exc}", kind="tls")
            return False
        except OSError as exc:
            self._fail(f"MQTT: cannot reach broker {where}: {exc}; events wait in the outbox, retrying "
                       "quietly", level=logging.WARNING, kind="down")
            return False
        return self._serve(client)

    def _serve(self, client: paho.Client) -> bool:
        # paho's own network thread (loop_start) is the only writer on the socket: publish() from other threads
        # just queues and wakes it, so packets can never interleave. reconnect_on_failure=False makes that thread
        # end with the connection; the next attempt uses a new client.
        s = self.settings
        self._refused = None
        self._accepted_at = None
        self._ended.clear()
        started = time.monotonic()
        client.loop_start()
        try:
            while not self._stop.is_set():
                ended = self._ended.wait(0.1)
                accepted_at = self._accepted_at
                if self._refused is not None:
                    break
                if ended or (accepted_at is not None and not client.is_connected()):
                    if accepted_at is not None:
                        lasted = time.monotonic() - accepted_at
                        hint = ""
                        if lasted >= STABLE_S:
                            self._told.clear()  # a session that lasted ends an outage: the next one is told afresh
                        if lasted < STABLE_S:
                            hint = (f"; the broker closed it {lasted:.1f}s after accepting us: check that its ACL "
                                    f"lets {s.username or 'this client'} publish to {s.will_topic.rsplit('/', 1)[0]}/# "
                                    "and the discovery prefix, and that no other client uses "
                                    f"client id {s.client_id!r}")
                        self._fail(f"MQTT: connection to {s.host}:{s.port} lost ({self._end_reason}){hint}",
                                   level=logging.WARNING, kind="down" if not hint else "dropped")
                    else:
                        self._fail(f"MQTT: broker {s.host}:{s.port} closed the connection before accepting it "
                                   f"({self._end_reason})", kind="closed")
                    break
                if accepted_at is None and time.monotonic() - started > CONNACK_TIMEOUT_S:
                    self._fail(f"MQTT: broker {s.host}:{s.port} did not answer CONNECT in {CONNACK_TIMEOUT_S}s",
                               kind="timeout")
                    break
        finally:
            with self._lock:
                self._client = None
                self._pending.clear()
                self._early.clear()
            # DISCONNECT if still connected (a clean goodbye: no last will), then end paho's thread.
            client.disconnect()
            client.loop_stop()
            accepted_at = self._accepted_at
            if accepted_at is not None:
                self._on_disconnected()
        return accepted_at is not None and time.monotonic() - accepted_at >= STABLE_S

    def _fail(self, message: str, level: int = logging.ERROR, kind: str = "other") -> None:
        """Log a failed attempt at `level` the first time its kind appears in an outage, then at DEBUG.

        A broker that stays away would otherwise log a warning on every retry; the publisher logs a summary
        every few minutes instead (how long, how many events wait, whether any were lost).
        """
        self.last_error = message
        self.failures += 1
        if kind in self._told:
            level = logging.DEBUG
        self._told.add(kind)
        log.log(level, "%s", message)

    def _make_client(self) -> paho.Client:
        client = build_client(self.settings, self._inflight)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        return client

    # --- paho callbacks (on this thread) -------------------------------------------------------------

    def _handle_connect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode,
                        properties: object) -> None:
        s = self.settings
        if reason.is_failure:
            hint = ""
            if reason.value in AUTH_FAILURES:
                hint = (f" (check mqtt.username {s.username!r} and {s.password_hint})" if s.username
                        else " (the broker wants a username: set mqtt.username and a password)")
            self._refused = str(reason)
            self._fail(f"MQTT: broker {s.host}:{s.port} refused the connection: {reason}{hint}")
            self._ended.set()
            return
        # paho does not honour an MQTT 5 broker's Receive Maximum, and cannot change its window once connected:
        # remember it for the next connection (the default window of 20 fits mosquitto's default).
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and 0 < receive_maximum < self._inflight:
            log.info("MQTT: broker accepts %d messages in flight; using that from the next connection",
                     receive_maximum)
            self._inflight = receive_maximum
        for topic in s.subscriptions:
            client.subscribe(topic, qos=1)
        self.connections += 1
        self.last_error = None
        self.failures = 0
        with self._lock:
            self._client = client
            self._pending.clear()
            self._early.clear()
        self._accepted_at = time.monotonic()
        log.info("MQTT: connected to %s:%s as %s (%s%s)", s.host, s.port, s.client_id, s.protocol,
                 ", TLS" if s.tls else "")
        self._on_connected()

    def _handle_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode,
                           properties: object) -> None:
        with self._lock:
            self._client = None  # nothing more is accepted for this connection
        self._end_reason = str(reason) if reason.is_failure else "closed"
        self._ended.set()

    def _handle_publish(self, client: paho.Client, userdata: object, mid: int, reason: ReasonCode,
                        properties: object) -> None:
        outcome = (not reason.is_failure, str(reason))
        with self._lock:
            if mid in self._pending:
                ack = self._pending.pop(mid)
            else:
                self._early[mid] = outcome
                return
        if ack is not None:
            ack(*outcome)

    def _handle_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("MQTT: ignored a message whose topic is not UTF-8")
            return
        try:
            self._on_message(topic, bytes(message.payload))
        except Exception:
            log.exception("MQTT: message handler failed on %s", topic)
