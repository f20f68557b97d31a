"""The project's error tree: one root, a few families, each carrying a process exit code.

EdgeError                    anything doorbell-edge raises on purpose (exit 1)
├── ConfigError              configuration cannot be used (exit 78, EX_CONFIG; systemd won't restart)
├── SourceError              a camera source failed (the runner reconnects with back-off)
├── ModelError               a shipped model is missing or unusable
├── StorageError             the state directory or a database cannot be used
└── RequestError             a footage-request document or command is unusable
    └── RequestChanged       the request is not the one the owner was shown (its hash differs)
"""

from __future__ import annotations

EX_CONFIG = 78


class EdgeError(Exception):
    """Root of every error doorbell-edge raises deliberately."""

    exit_code = 1


class ConfigError(EdgeError):
    """The configuration is invalid; `messages` holds one compiler-style line per problem."""

    exit_code = EX_CONFIG

    def __init__(self, messages: list[str] | str) -> None:
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("\n".join(self.messages))


class SourceError(EdgeError):
    """A camera source could not be opened or stopped delivering frames."""


class ModelError(EdgeError):
    """A model file is missing, corrupt or cannot run."""


class StorageError(EdgeError):
    """State on disk cannot be read or written."""


class RequestError(EdgeError):
    """A footage request or an owner command about one is unusable."""


class RequestChanged(RequestError):
    """The footage request the owner decided on is not the one they were shown: nothing was recorded."""
