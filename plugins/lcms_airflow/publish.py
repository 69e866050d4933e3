"""The end of every stage run: assess its outputs in storage and summarise the run."""

from __future__ import annotations

from typing import Any


def summarise_run(stage: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Write and return the run summary of ``spec``; for a per-tile stage, check its failed tiles first.

    Reading storage (not the tasks' XCom) makes this the same for every tile runner, including ECS
    tasks that return nothing to Airflow. A per-tile stage's summary carries ``excluded``: the gaps the
    stages below leave out (this run's failed tiles within the tolerance, and the upstream ones);
    beyond the tolerance it raises, naming the tiles (see :mod:`lcms_tasks.tolerance`).
    """
    from lcms_airflow.tile_runners import run_context
    from lcms_tasks import tolerance
    from lcms_tasks.stages import stage_info

    ctx = run_context(spec)
    if stage_info(stage).mapped:
        return tolerance.finish_stage_run(stage, ctx)
    summary = {**tolerance.base_summary(stage, ctx), "excluded": dict(ctx.excluded)}
    ctx.storage.write_json(tolerance.summary_uri(ctx, stage), summary)
    return summary
