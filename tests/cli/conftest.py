"""The command-line tests (one module per command group, as edge/cli/) use the real mosquitto of the MQTT tests
and the real models and ../shared/data of the vision tests."""

from tests.mqtt.conftest import broker, subscribe  # noqa: F401  (pytest fixtures)
from tests.vision.conftest import data, engine_float, engine_int8  # noqa: F401  (pytest fixtures)
