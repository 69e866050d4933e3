"""The end of every stage run: verify outputs in storage and summarise the run."""

from __future__ import annotations

from typing import Any

from lcms_tasks.errors import StageError


def summarise_run(stage: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Check that every planned tile of ``spec`` is complete; write and return the run summary.

    Reading storage (not the tasks' XCom) makes this the same for every tile
    runner, including ECS tasks that return nothing to Airflow.
    """
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles, select_tiles
    from lcms_tasks.stages import stage_info

    cfg = load_config(spec["config"])
    ctx = RunContext.create(cfg, season=spec["season"], run_id=spec["run_id"])
    summary: dict[str, Any] = {
        "stage": stage,
        "project": cfg.project,
        "season": ctx.season,
        "run_id": ctx.run_id,
        "upstream_run_id": spec.get("upstream_run_id"),
    }
    if stage_info(stage).mapped:
        tiles = select_tiles(project_tiles(cfg), spec.get("tiles") or None)
        # A product stage: every product's output of every tile.
        missing = [
            t.id if pctx.is_primary_product else f"{t.id} ({pctx.product_name})"
            for pctx in ctx.contexts_for(stage)
            for t in tiles
            if not ctx.storage.is_complete(pctx.tile_uri(stage, t.id))
        ]
        if missing:
            raise StageError(
                f"stage {stage!r}, season {ctx.season}: {len(missing)} tile(s) incomplete: "
                f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}"
            )
        summary["tiles_complete"] = len(tiles)
    ctx.storage.write_json(ctx.run_uri(stage, "runs", f"{_safe(ctx.run_id)}.json"), summary)
    return summary


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in run_id)
