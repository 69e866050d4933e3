"""Stage reporting (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "reporting"


class Options(StrictModel):
    """Options of the reporting stage."""
