"""Stage change_detection (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "change_detection"


class Options(StrictModel):
    """Options of the change_detection stage."""
