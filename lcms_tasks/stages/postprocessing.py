"""Stage postprocessing (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "postprocessing"


class Options(StrictModel):
    """Options of the postprocessing stage."""
