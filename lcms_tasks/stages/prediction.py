"""Stage prediction (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "prediction"


class Options(StrictModel):
    """Options of the prediction stage."""
