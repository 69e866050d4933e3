"""Stage add_reference (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "add_reference"


class Options(StrictModel):
    """Options of the add_reference stage."""
