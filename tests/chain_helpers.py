"""Helpers shared by the tests that process a small project for real, stage by stage, and by the browser tests.

* :func:`run_chain` runs stages of one season in this process (mapped ones over every tile, failing on a
  failed tile); :func:`run_two_seasons` the usual 2023 (download to change_detection) then 2024 (mapped
  with 2023's model) of the conftest project; :func:`publish_season` the publish stage of a season.
* :data:`CHROMIUM` and :data:`CHROMIUM_FLAGS`: Debian's Chromium as Playwright's browser.
"""

from __future__ import annotations

from pathlib import Path

from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.preflight import check_run
from lcms_tasks.runner import finalize_stage, run_stage, run_tiles
from lcms_tasks.stages import stage_info

FIRST = ("download", "features", "add_reference", "sampling", "merge_features", "training")
MAPS = ("prediction", "postprocessing", "change_detection")

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out, which this closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def run_chain(config: Path, season: str, stages: tuple[str, ...], run_id: str) -> RunContext:
    """Run ``stages`` of ``season`` in order, as the runner runs them (a failed tile fails the test)."""
    ctx = RunContext.create(load_config(config), season=season, run_id=run_id, config_path=str(config))
    for stage in stages:
        if stage_info(stage).mapped:
            result = run_tiles(stage, ctx.tiles(), ctx)
            assert not result.failed, (stage, result.failed)
        else:
            run_stage(stage, ctx)
    return ctx


def run_two_seasons(config: Path) -> None:
    """2023 from download to change_detection, then 2024's download, features and maps (the config names the model)."""
    run_chain(config, "2023", FIRST + MAPS, "chain-2023")
    run_chain(config, "2024", ("download", "features", *MAPS), "chain-2024")


def publish_season(config: Path, season: str) -> list[str]:
    """The publish stage of ``season`` over every tile (all must be written), then its finalize; its outputs."""
    ctx = RunContext.create(
        load_config(config),
        season=season,
        run_id=f"publish-{season}",
        upstream_run_id=f"reporting-{season}",
        config_path=str(config),
    )
    check_run("publish", ctx)
    result = run_tiles("publish", ctx.tiles(), ctx)
    assert sorted(result.written) == sorted(t.id for t in ctx.tiles()) and not result.failed, result.failed
    return list(finalize_stage("publish", ctx))
