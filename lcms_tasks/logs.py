"""Structured log lines: every line of a stage run names project, season, stage, product, run id and tile.

The fields go twice: as ``key=value`` at the end of the message (any handler, any formatter, the
Airflow task log and a CloudWatch stream show them) and as ``record.lcms`` (a dict) for a handler that
ships structured records. ``tile=`` is given per call: ``run_log(...).info("done", tile="T")``.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext


class RunLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines carry the run's fields."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = dict(self.extra or {})
        tile = kwargs.pop("tile", None)
        if tile is not None:
            fields["tile"] = tile
        kwargs["extra"] = {**dict(kwargs.get("extra") or {}), "lcms": fields}
        return f"{msg} [{' '.join(f'{k}={v}' for k, v in fields.items())}]", kwargs


def run_log(logger: logging.Logger, ctx: RunContext, stage: str) -> RunLog:
    """``logger`` for the lines of ``stage`` in run ``ctx``."""
    fields = {"project": ctx.config.project, "season": ctx.season, "stage": stage}
    if ctx.product:
        fields["product"] = ctx.product
    fields["run_id"] = ctx.run_id
    return RunLog(logger, fields)
