"""Base pydantic model for every LCMS config section.

Unknown keys are rejected (a typo must not be silently ignored) and configs
are frozen once loaded, so a stage cannot mutate what another stage reads.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Frozen model that forbids unknown keys; every field carries a description."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
