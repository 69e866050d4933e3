"""Stage sampling (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "sampling"


class Options(StrictModel):
    """Options of the sampling stage."""
