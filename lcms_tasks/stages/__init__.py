"""Pipeline stages: the registry (cheap to import) and one module per stage.

Each stage module has an ``Options`` schema and ``run``: mapped stages
``run(tile, ctx) -> list[str]`` (URIs written for one tile), the others
``run(ctx) -> list[str]`` for the whole season. The registry below is the
single description of the pipeline's shape; Airflow DAG files read it at
parse time, so this module imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class RunParam:
    """A run parameter a stage takes besides config/season/tiles (trigger form, ``lcms run --param``)."""

    name: str
    description: str


@dataclass(frozen=True)
class StageInfo:
    """What the orchestration needs to know about a stage, without importing it."""

    name: str
    module: str
    mapped: bool  # True: runs per tile (mapped over tile batches); False: once per season
    upstream: str | None  # the stage whose completion triggers this one
    summary: str
    params: tuple[RunParam, ...] = ()
    #: Default execution timeout of one task (a batch of tiles, or the season), in minutes.
    timeout_minutes: int = 120
    #: Mapped stages only: the module also has ``finalize(ctx) -> list[str]``, run once for the season
    #: after every batch (season-level artefacts built from the tiles' outputs).
    finalize: bool = False
    #: Per-season stages only: the run-level artefact that holds the stage's result (``<stage>/_run/<name>``).
    #: A run with ``skip_existing`` keeps it when it is complete, as per-tile stages keep complete tiles: a
    #: re-run of failed tiles (:mod:`lcms_tasks.tolerance`) predicts them with the model the other tiles had.
    season_artefact: str | None = None


STAGES: tuple[StageInfo, ...] = (
    StageInfo(
        "download",
        "lcms_tasks.stages.download",
        True,
        None,
        "Imagery, cloud mask and valid-data mask per tile from the configured source.",
    ),
    StageInfo(
        "features",
        "lcms_tasks.stages.features",
        True,
        "download",
        "NDVI, NDWI, NDBI, tasselled cap on a regular date grid (interpolation or mosaics).",
    ),
    StageInfo(
        "add_reference",
        "lcms_tasks.stages.add_reference",
        True,
        "features",
        "Reference polygons of the season rasterised into per-tile label masks.",
    ),
    StageInfo(
        "sampling",
        "lcms_tasks.stages.sampling",
        True,
        "add_reference",
        "Stratified, seeded sampling of labelled pixels per tile.",
    ),
    StageInfo(
        "merge_features",
        "lcms_tasks.stages.merge_features",
        False,
        "sampling",
        "All tiles' samples merged into ML-ready datasets with a spatial train/validation/test split.",
        season_artefact="dataset",
    ),
    StageInfo(
        "training",
        "lcms_tasks.stages.training",
        False,
        "merge_features",
        "XGBoost classifier trained with early stopping; model, metadata and test metrics stored.",
        season_artefact="model",
    ),
    StageInfo(
        "prediction",
        "lcms_tasks.stages.prediction",
        True,
        "training",
        "Class map and confidence per tile, predicted in bounded-memory chunks.",
    ),
    StageInfo(
        "postprocessing",
        "lcms_tasks.stages.postprocessing",
        True,
        "prediction",
        "Superpixel majority vote, modal filter, minimum mapping unit, optional erosion/dilation.",
    ),
    StageInfo(
        "change_detection",
        "lcms_tasks.stages.change_detection",
        True,
        "postprocessing",
        "Relevant class transitions between the 'before' and 'after' seasons as change polygons.",
        params=(
            RunParam(
                "before_season",
                "Season to compare against (a season id of the config, not the run's own); "
                "empty = the season before `season` in the config.",
            ),
        ),
    ),
    StageInfo(
        "reporting",
        "lcms_tasks.stages.reporting",
        False,
        "change_detection",
        "Class and change areas, metrics and data quality per run, tile and region (JSON + HTML).",
    ),
    StageInfo(
        "publish",
        "lcms_tasks.stages.publish",
        True,
        "reporting",
        "Maps as Cloud Optimized GeoTIFFs in the BYOC layout, mosaics and styles, the STAC catalog, the change "
        "store (PostGIS) and Sentinel Hub BYOC registration.",
        finalize=True,
    ),
)

_BY_NAME = {s.name: s for s in STAGES}

#: Stages that run once per map product of the project (``products`` in the config), each product with
#: its own legend, options and artefact folders; the others (imagery, features, change detection on the
#: primary product) run once. The primary product's published tile folders hold CLASS, CONFIDENCE and
#: CHANGE, another product's CLASS and CONFIDENCE, each product in its own STAC collection.
#: See :meth:`lcms_tasks.context.RunContext.for_product`.
PRODUCT_STAGES: frozenset[str] = frozenset(
    {
        "add_reference",
        "sampling",
        "merge_features",
        "training",
        "prediction",
        "postprocessing",
        "reporting",
        "publish",
        "parcel_markers",  # not a DAG of its own: the reporting stage's option, or `lcms parcels markers`
    }
)


def stage_info(name: str) -> StageInfo:
    """The registry entry of ``name`` (``ValueError`` naming the known stages if unknown)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(_BY_NAME)}") from None


def check_run_params(name: str, params: dict[str, object]) -> dict[str, str]:
    """``params`` with empty values dropped; ``ConfigError`` for a name stage ``name`` does not take.

    Values are checked by the stage itself before any work (:func:`lcms_tasks.preflight.check_run`).
    """
    from lcms_tasks.errors import ConfigError

    known = {p.name for p in stage_info(name).params}
    unknown = sorted(set(params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) if known else "none"
        raise ConfigError(
            f"stage {name!r} has no run parameter {', '.join(repr(u) for u in unknown)} (it takes: {takes})",
            field="params",
        )
    return {k: str(v).strip() for k, v in params.items() if v is not None and str(v).strip()}


def get_stage(name: str) -> ModuleType:
    """The module implementing stage ``name``."""
    return importlib.import_module(stage_info(name).module)


def stage_names() -> list[str]:
    """Stage names in pipeline order."""
    return [s.name for s in STAGES]
