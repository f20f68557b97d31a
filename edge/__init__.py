"""doorbell-edge: a privacy-first doorbell camera appliance that keeps faces and footage at home."""

__version__ = "0.1.0"
