"""The events tests use the MQTT tests' real mosquitto and subscriber fixtures."""

from tests.mqtt.conftest import broker, subscribe  # noqa: F401  (pytest fixtures)
