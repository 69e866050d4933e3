"""Stage merge_features (being written)."""

from __future__ import annotations

from lcms_tasks.schema import StrictModel

NAME = "merge_features"


class Options(StrictModel):
    """Options of the merge_features stage."""
