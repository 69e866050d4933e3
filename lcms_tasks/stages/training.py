"""Stage training (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "training"


class Options(StrictModel):
    """Options of the training stage."""
