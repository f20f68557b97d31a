"""What every config section shares: the strict base model, polygons, the default paths and environment names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CONFIG_PATH = Path("/etc/doorbell-edge/config.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/doorbell-edge")
CONFIG_ENV = "DOORBELL_EDGE_CONFIG"
STATE_DIR_ENV = "DOORBELL_EDGE_STATE_DIR"


# Validators that check one key from a parent model start their message with "@dotted.key: " so the
# loader can point at that key instead of the parent.


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# A polygon in normalised image coordinates: [[x, y], ...] with 0 <= x, y <= 1, at least three points.
Point = Annotated[list[Annotated[float, Field(ge=0.0, le=1.0)]], Field(min_length=2, max_length=2)]
Polygon = Annotated[list[Point], Field(min_length=3)]
