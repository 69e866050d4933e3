"""Parcel markers from the maps' own features: crop type per declared parcel (issue 12, the raster path).

For one season: the declarations (a vector file with a class column and a crosswalk, or on the synthetic
source every crop field of the generator) are rasterised onto each tile's grid with their 1-based record
index, shrunk by an inner buffer (:func:`lcms_tasks.parcels.markers.inner_buffer`), and the features stage's
``FEATURES`` (K dates x F features) are aggregated over each parcel's clean pixels (``VALID_COUNT > 0``
and finite): mean and standard deviation per feature and date, and the pixel count.

* **Parcels cut by tile borders** are combined, not assigned: every tile contributes its piece's count,
  mean and sum of squared deviations per date and feature, and the pieces are pooled exactly (Chan's
  parallel formula, :func:`combine`), so a parcel's figures do not depend on where the tile borders fall.
  The inner buffer does not erode a parcel along the tile border (its other side is in the next tile).
* **Too small**: a parcel with fewer than ``min_pixels`` clean pixels after the buffer gets the status
  ``too_small`` and no prediction (no guess), and takes no part in training.
* **Spatially grouped split**: parcels are grouped by cells of ``block_m`` metres (the cell holding the
  centre of the parcel's pixels in the tile holding most of them); whole cells, shuffled with ``seed``,
  go to training until ``train_fraction`` of the usable parcels is reached, the rest are held out. No cell
  is on both sides, so neighbouring parcels (same soil, same weather, same farmer) do not leak.
* **Classifier**: the training stage's XGBoost (:func:`lcms_tasks.parcels.classify.fit`) on the training
  parcels' means and standard deviations; every parcel that is not too small is predicted. The summary's
  ``held_out`` figures are out-of-sample (held-out parcels only); the training parcels' predictions are
  in-sample and marked ``split = train`` in the outputs.
* **Disagreement**: declared != predicted with a probability of at least ``disagreement_threshold``.

Outputs (one folder, written atomically through :meth:`lcms_tasks.storage.Storage.writing_dir`) at
``<project>/<season>/parcel_markers/_run/``: ``parcels.parquet`` (GeoParquet: the marker columns and the
aggregated features), ``parcels.gpkg`` (the marker columns), ``disagreements.csv`` (the flagged parcels by
decreasing probability) and ``summary.json`` (counts, held-out agreement, agreement per crop, the
declared-vs-predicted confusion).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field

from lcms_tasks.parcels import markers
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.config import LegendClass
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile

log = logging.getLogger(__name__)

NAME = "parcel_markers"
STATUS_OK = "ok"
STATUS_TOO_SMALL = "too_small"
MARKER_COLUMNS = (
    "parcel_id",
    "declared",
    "predicted",
    "probability",
    "disagreement",
    "status",
    "n_pixels",
    "split",
    "group",
)


class FileDeclarations(StrictModel):
    """Declarations from a vector file GDAL can read (e.g. a paying agency's GSAA / LPIS export)."""

    type: Literal["file"] = Field("file", description="A vector file.")
    path: str = Field(description="Vector file; may contain '{season}'; relative to the config folder.")
    layer: str | None = Field(None, description="Layer of a multi-layer file (GeoPackage).")
    class_column: str = Field(description="Attribute holding the declared crop code of each parcel.")
    id_column: str | None = Field(None, description="Attribute holding the parcel id (None: the record number).")
    crosswalk: dict[str | int, str | int] | None = Field(
        None, description="Code -> legend class name or id (0 = no declared crop). None: codes are legend names/ids."
    )
    crosswalk_file: str | None = Field(
        None, description="CSV with columns code,class (instead of `crosswalk`); relative to the config folder."
    )


class SyntheticDeclarations(StrictModel):
    """Every crop field of the synthetic source as a declared parcel (its true crop, optionally misdeclared)."""

    type: Literal["synthetic"] = Field("synthetic", description="The synthetic source's truth parcels.")
    misdeclared_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of parcels declared with another crop (seeded), to see flags."
    )
    seed: int = Field(0, description="Seed of the misdeclarations.")


Declarations = Annotated[FileDeclarations | SyntheticDeclarations, Field(discriminator="type")]


class Options(StrictModel):
    """Options of the raster parcel markers."""

    declarations: Declarations = Field(
        default_factory=lambda: SyntheticDeclarations(), description="Where the season's declarations come from."
    )
    legend: str = Field("crop_type", description="Legend the declared and predicted crops belong to.")
    inner_buffer_px: int = Field(1, ge=0, le=50, description="Inner buffer (pixels) removed along parcel borders.")
    min_pixels: int = Field(4, ge=1, description="Parcels with fewer clean pixels get `too_small`, no prediction.")
    train_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="Share of usable parcels used for training.")
    block_m: float = Field(2000.0, gt=0.0, description="Side of the grid cells grouping parcels for the split (m).")
    disagreement_threshold: float = Field(
        0.8, ge=0.0, le=1.0, description="Flag declared != predicted when the probability is at least this."
    )
    min_class_count: int = Field(5, ge=1, description="Classes with fewer training parcels are left out.")
    seed: int = Field(0, description="Seed of the split and of XGBoost.")
    threads: int = Field(0, ge=0, description="XGBoost threads (0: all cores).")


# -- pure pieces ------------------------------------------------------------------------------------


def rasterise(geometries: Any, values: np.ndarray, transform: Any, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 image of ``values`` (1-based parcel indices) burnt from ``geometries`` (0 = none).

    Pixel centres inside a polygon take its value; where polygons overlap, the later one wins.
    """
    from rasterio import features

    shapes = [(g, int(v)) for g, v in zip(geometries, values, strict=True) if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, dtype=np.int32)
    return features.rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")


@dataclasses.dataclass
class Pieces:
    """One tile's pieces of parcels: per parcel (P), date (K) and feature (F) the pooled statistics."""

    ids: np.ndarray  # (P,) parcel indices (1-based)
    n: np.ndarray  # (P, K, F) finite clean values
    mean: np.ndarray  # (P, K, F) float64
    m2: np.ndarray  # (P, K, F) float64, sum of squared deviations from the mean
    count: np.ndarray  # (P,) clean pixels after the inner buffer
    raw_count: np.ndarray  # (P,) pixels before the buffer (where the parcel lies)
    centre: np.ndarray  # (P, 2) x, y of the centre of the parcel's pixels (tile CRS)


def tile_pieces(
    features: np.ndarray, parcel_ids: np.ndarray, clean: np.ndarray | None, inner_px: int, transform: Any
) -> Pieces:
    """The tile's pieces: inner buffer, then :func:`markers.aggregate` and the finite counts per date and feature."""
    ids_image = np.asarray(parcel_ids)
    buffered = markers.inner_buffer(ids_image, inner_px)
    ids, mean, std, count = markers.aggregate(features, buffered, clean)
    use = buffered != 0
    if clean is not None:
        use &= np.asarray(clean, dtype=bool)
    codes = np.searchsorted(ids, buffered[use])
    k_dates, n_feat = features.shape[0], features.shape[3]
    n = np.zeros((ids.size, k_dates, n_feat), dtype=np.int64)
    pixels = features[:, use, :]
    for k in range(k_dates):
        for f in range(n_feat):
            finite = np.isfinite(pixels[k, :, f])
            n[:, k, f] = np.bincount(codes[finite], minlength=ids.size)
    mean64 = np.where(n > 0, mean.astype(np.float64), 0.0)
    m2 = np.where(n > 0, n * std.astype(np.float64) ** 2, 0.0)
    # where each parcel lies (before the buffer): for the tile holding most of it and its group cell
    raw = ids_image != 0
    raw_ids, raw_codes = np.unique(ids_image[raw], return_inverse=True)
    rows, cols = np.nonzero(raw)
    raw_count = np.bincount(raw_codes, minlength=raw_ids.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.bincount(raw_codes, weights=rows + 0.5, minlength=raw_ids.size) / raw_count
        c = np.bincount(raw_codes, weights=cols + 0.5, minlength=raw_ids.size) / raw_count
    x = transform.c + transform.a * c + transform.b * r
    y = transform.f + transform.d * c + transform.e * r
    # the pieces are the parcels present before the buffer; a fully eroded one has count 0
    at = np.searchsorted(raw_ids, ids)
    full_n = np.zeros((raw_ids.size, k_dates, n_feat), dtype=np.int64)
    full_mean = np.zeros(full_n.shape, dtype=np.float64)
    full_m2 = np.zeros(full_n.shape, dtype=np.float64)
    full_count = np.zeros(raw_ids.size, dtype=np.int64)
    full_n[at], full_mean[at], full_m2[at], full_count[at] = n, mean64, m2, count
    return Pieces(
        ids=raw_ids.astype(np.int64),
        n=full_n,
        mean=full_mean,
        m2=full_m2,
        count=full_count,
        raw_count=raw_count.astype(np.int64),
        centre=np.stack([x, y], axis=1),
    )


@dataclasses.dataclass
class Combined:
    """Every declared parcel's figures pooled over its pieces (index i = parcel i + 1)."""

    mean: np.ndarray  # (N, K, F) float32, NaN where no finite value
    std: np.ndarray  # (N, K, F) float32
    count: np.ndarray  # (N,) clean pixels
    centre: np.ndarray  # (N, 2) centre in the tile holding most of the parcel (NaN: on no tile)
    home: list[str | None]  # that tile's key (e.g. its CRS), None: on no tile


def combine(pieces: list[tuple[str, Pieces]], n_parcels: int, k_dates: int, n_feat: int) -> Combined:
    """Pool the pieces of every parcel (Chan et al.'s parallel mean / variance); ``pieces`` are (tile key, Pieces)."""
    n = np.zeros((n_parcels, k_dates, n_feat), dtype=np.int64)
    mean = np.zeros(n.shape, dtype=np.float64)
    m2 = np.zeros(n.shape, dtype=np.float64)
    count = np.zeros(n_parcels, dtype=np.int64)
    best = np.zeros(n_parcels, dtype=np.int64)
    centre = np.full((n_parcels, 2), np.nan)
    home: list[str | None] = [None] * n_parcels
    for key, piece in pieces:
        i = piece.ids - 1
        na, nb = n[i], piece.n
        total = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = piece.mean - mean[i]
            new_mean = np.where(total > 0, mean[i] + delta * nb / np.maximum(total, 1), 0.0)
            new_m2 = m2[i] + piece.m2 + np.where(total > 0, delta**2 * na * nb / np.maximum(total, 1), 0.0)
        n[i], mean[i], m2[i] = total, new_mean, new_m2
        count[i] += piece.count
        larger = piece.raw_count > best[i]
        best[i[larger]] = piece.raw_count[larger]
        centre[i[larger]] = piece.centre[larger]
        for j in i[larger]:
            home[int(j)] = key
    with np.errstate(invalid="ignore", divide="ignore"):
        out_mean = np.where(n > 0, mean, np.nan).astype(np.float32)
        out_std = np.where(n > 0, np.sqrt(m2 / np.maximum(n, 1)), np.nan).astype(np.float32)
    return Combined(mean=out_mean, std=out_std, count=count, centre=centre, home=home)


def group_cells(centre: np.ndarray, home: list[str | None], block_m: float) -> np.ndarray:
    """(N,) group names: the ``block_m`` cell of each parcel's centre in its home tile's CRS ('' when on no tile)."""
    out = []
    for (x, y), key in zip(centre, home, strict=True):
        if key is None or not (math.isfinite(x) and math.isfinite(y)):
            out.append("")
        else:
            out.append(f"{key}:{math.floor(x / block_m)}:{math.floor(y / block_m)}")
    return np.asarray(out, dtype=object)


def grouped_split(groups: np.ndarray, usable: np.ndarray, train_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True = training: whole groups, shuffled with ``seed``, until ``train_fraction`` of the usable
    parcels is reached. With at least two groups of usable parcels, both sides get at least one group."""
    groups = np.asarray(groups, dtype=object)
    usable = np.asarray(usable, dtype=bool)
    names = sorted({str(g) for g in groups[usable]})
    train = np.zeros(groups.size, dtype=bool)
    if not names:
        return train
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    sizes = {name: int(np.sum(usable & (groups == name))) for name in names}
    target = train_fraction * int(usable.sum())
    chosen: list[str] = []
    taken = 0
    for name in order:
        if taken >= target or (len(names) > 1 and len(chosen) == len(names) - 1):
            break
        chosen.append(name)
        taken += sizes[name]
    return np.isin(groups, np.asarray(chosen, dtype=object))


def held_out_figures(
    declared: np.ndarray, predicted: np.ndarray, test: np.ndarray, classes: list[str], train_declared: np.ndarray
) -> dict[str, Any]:
    """Out-of-sample agreement on the held-out parcels with a prediction and a declared crop the model knows;
    ``majority_class_rate``: the agreement of always predicting the training parcels' most frequent crop."""
    from lcms_tasks.ml.metrics import classification_report

    known = np.array([d is not None and d in classes for d in declared], dtype=bool)
    has = np.array([p is not None for p in predicted], dtype=bool)
    rows = np.flatnonzero(test & known & has)
    out: dict[str, Any] = {"n": int(rows.size)}
    if rows.size == 0:
        return {**out, "agreement": None, "macro_f1": None, "kappa": None, "majority_class_rate": None}
    code = {c: i for i, c in enumerate(classes)}
    y_true = np.array([code[declared[r]] for r in rows])
    y_pred = np.array([code[predicted[r]] for r in rows])
    report = classification_report(y_true, y_pred, list(range(len(classes))), dict(enumerate(classes)))
    values, counts = np.unique(np.asarray([d for d in train_declared if d is not None], dtype=str), return_counts=True)
    majority = str(values[np.argmax(counts)]) if values.size else None
    return {
        **out,
        "agreement": report["overall_accuracy"],
        "macro_f1": report["macro_f1"],
        "kappa": report["kappa"],
        "majority_class": majority,
        "majority_class_rate": float(np.mean([declared[r] == majority for r in rows])),
    }


def agreement_tables(
    declared: np.ndarray, predicted: np.ndarray, mask: np.ndarray, names: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Agreement per declared crop and the declared (rows) x predicted (columns) confusion over ``mask``."""
    rows = [r for r in np.flatnonzero(mask) if declared[r] is not None and predicted[r] is not None]
    per: dict[str, Any] = {}
    for name in names:
        mine = [r for r in rows if declared[r] == name]
        if mine:
            agree = sum(predicted[r] == name for r in mine)
            per[name] = {"n": len(mine), "agree": int(agree), "rate": agree / len(mine)}
    labels = [n for n in names if any(declared[r] == n or predicted[r] == n for r in rows)]
    at = {n: i for i, n in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for r in rows:
        matrix[at[declared[r]]][at[predicted[r]]] += 1
    return per, {"labels": labels, "rows_declared_columns_predicted": matrix}


# -- declarations -----------------------------------------------------------------------------------


def read_declarations(ctx: RunContext, options: Options) -> gpd.GeoDataFrame:
    """The season's declarations: columns ``parcel_id``, ``declared`` (legend class name or None), geometry."""
    legend = ctx.config.legend(options.legend)
    source = options.declarations
    if isinstance(source, SyntheticDeclarations):
        return _synthetic_declarations(ctx, source, legend, options.legend)
    return _file_declarations(ctx, source, legend)


def _file_declarations(ctx: RunContext, source: FileDeclarations, legend: list[LegendClass]) -> gpd.GeoDataFrame:
    import geopandas as gpd

    from lcms_tasks.reference import sources as src

    cfg = ctx.config
    path = cfg.resolve_path(source.path.replace("{season}", ctx.season))
    if not path.is_file():
        raise ValueError(f"declarations file {path} does not exist")
    try:
        frame = gpd.read_file(path, layer=source.layer)
    except Exception as err:  # GDAL errors of every kind: name the file
        raise ValueError(f"cannot read declarations file {path}: {err}") from err
    for column in (source.class_column, source.id_column):
        if column is not None and column not in frame.columns:
            columns = [c for c in frame.columns if c != frame.geometry.name]
            raise ValueError(f"declarations file {path} has no column {column!r}; columns: {columns}")
    if frame.crs is None:
        raise ValueError(f"declarations file {path} has no CRS")
    crosswalk_map = source.crosswalk
    if source.crosswalk_file is not None:
        crosswalk_map = src.read_crosswalk_csv(cfg.resolve_path(source.crosswalk_file.replace("{season}", ctx.season)))
    crosswalk = src.build_crosswalk(crosswalk_map, legend, where=f"crosswalk of {path}")
    names = {c.id: c.name for c in legend}
    declared: list[str | None] = []
    for i, value in enumerate(frame[source.class_column]):
        record = f"record {i}" + (
            f" ({source.id_column} {frame[source.id_column].iloc[i]!r})" if source.id_column else ""
        )
        where = f"declarations file {path}, column {source.class_column!r}, {record}"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            declared.append(None)
            continue
        if crosswalk is not None:
            cid = crosswalk.get(src.code_key(value))
            if cid is None:
                raise ValueError(f"{where}: code {value!r} is not in the crosswalk")
        else:
            cid = src.resolve_class(value if isinstance(value, str) else int(value), legend, where=where)
        declared.append(names[cid] if cid else None)
    ids = frame[source.id_column].astype(str) if source.id_column else [str(i) for i in range(len(frame))]
    if source.id_column and len(set(ids)) != len(frame):
        raise ValueError(f"declarations file {path}, column {source.id_column!r}: parcel ids are not unique")
    return gpd.GeoDataFrame(
        {"parcel_id": list(ids), "declared": declared}, geometry=list(frame.geometry), crs=frame.crs
    )


def _synthetic_declarations(
    ctx: RunContext, source: SyntheticDeclarations, legend: list[LegendClass], legend_name: str
) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import pandas as pd

    from lcms_tasks import eopatch
    from lcms_tasks.config import SyntheticSourceConfig

    if not isinstance(ctx.config.source, SyntheticSourceConfig):
        raise ValueError("declarations: the project's source is not synthetic; give a declarations file")
    if legend_name not in ("crop_type", "land_cover"):
        raise ValueError(f"synthetic declarations know the legends crop_type and land_cover, not {legend_name!r}")
    names = {c.id: c.name for c in legend}
    frames = []
    crs = ctx.tiles()[0].crs
    for tile in ctx.tiles():
        uri = ctx.tile_uri("download", tile.id)
        if not ctx.storage.is_complete(uri):
            raise ValueError(f"declarations: no download for tile {tile.id} in season {ctx.season} ({uri})")
        patch, _ = eopatch.load(ctx.storage, uri, features=["vector_timeless/TRUTH_PARCELS"])
        parcels = patch.vector_timeless["TRUTH_PARCELS"]
        parcels = parcels[parcels[legend_name] > 0]
        parcels = parcels.to_crs(crs) if parcels.crs is not None and not parcels.crs.equals(crs) else parcels
        frames.append(
            gpd.GeoDataFrame(
                {
                    "parcel_id": [f"{tile.id}:{int(p)}" for p in parcels["parcel_id"]],
                    "declared": [names[int(c)] for c in parcels[legend_name]],
                },
                geometry=list(parcels.geometry),
                crs=crs,
            )
        )
    frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
    if source.misdeclared_fraction > 0 and len(frame):
        rng = np.random.default_rng(source.seed)
        flip = np.flatnonzero(rng.random(len(frame)) < source.misdeclared_fraction)
        present = sorted(set(frame["declared"]))
        for i in flip:
            others = [n for n in present if n != frame.at[i, "declared"]]
            if others:
                frame.at[i, "declared"] = others[int(rng.integers(len(others)))]
    return frame


# -- the run ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Features:
    """The season's features pooled per declared parcel."""

    combined: Combined
    feature_names: list[str]
    dates: list[str]
    tiles: int


def parcel_features(ctx: RunContext, declarations: gpd.GeoDataFrame, options: Options) -> Features:
    """Rasterise the declarations on every tile with features, aggregate, and pool the pieces."""
    from lcms_tasks import eopatch

    pieces: list[tuple[str, Pieces]] = []
    names: list[str] | None = None
    dates: list[str] | None = None
    values = np.arange(1, len(declarations) + 1, dtype=np.int64)
    by_crs: dict[str, gpd.GeoDataFrame] = {}
    tiles: list[Tile] = []
    for tile in ctx.tiles():
        uri = ctx.tile_uri("features", tile.id)
        if not ctx.storage.is_complete(uri):
            log.warning("parcel markers: no features for tile %s (%s); its parcels' pieces are missing", tile.id, uri)
            continue
        tiles.append(tile)
        if tile.crs not in by_crs:
            by_crs[tile.crs] = declarations.to_crs(tile.crs)
        local = by_crs[tile.crs]
        hits = np.sort(local.sindex.query(_box(tile.bounds), predicate="intersects"))
        if hits.size == 0:
            continue
        patch, meta = eopatch.load(ctx.storage, uri, features=["data/FEATURES", "mask_timeless/VALID_COUNT"])
        tile_names = list(meta["feature_names"])
        tile_dates = [str(t.date()) for t in patch.timestamps or []]
        if names is None:
            names, dates = tile_names, tile_dates
        elif tile_names != names or tile_dates != dates:
            raise ValueError(f"{uri}: features {tile_names} on {len(tile_dates)} dates differ from the other tiles'")
        ids_image = rasterise(local.geometry.iloc[hits], values[hits], tile.transform(), tile.shape)
        clean = patch.mask_timeless["VALID_COUNT"][..., 0] > 0
        pieces.append(
            (
                str(tile.crs),
                tile_pieces(patch.data["FEATURES"], ids_image, clean, options.inner_buffer_px, tile.transform()),
            )
        )
    if names is None or dates is None:
        raise ValueError(
            f"no features for season {ctx.season} under the declarations: run the features stage first "
            f"(looked in {ctx.stage_uri('features')})"
        )
    combined = combine(pieces, len(declarations), len(dates), len(names))
    return Features(combined=combined, feature_names=names, dates=dates, tiles=len(tiles))


def _box(bounds: tuple[float, float, float, float]) -> Any:
    from shapely.geometry import box

    return box(*bounds)


def markers_table(
    declarations: gpd.GeoDataFrame, feats: Features, options: Options
) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """Split, train, predict and flag: the per-parcel table (declaration order) and the summary."""
    from lcms_tasks.parcels import classify
    from lcms_tasks.stages import training

    comb = feats.combined
    n_parcels = len(declarations)
    declared = np.asarray(list(declarations["declared"]), dtype=object)
    small = markers.too_small(comb.count, options.min_pixels)
    groups = group_cells(comb.centre, comb.home, options.block_m)
    usable = ~small & np.array([d is not None for d in declared], dtype=bool)
    train = grouped_split(groups, usable, options.train_fraction, options.seed)
    X = np.concatenate([comb.mean.reshape(n_parcels, -1), comb.std.reshape(n_parcels, -1)], axis=1)
    training_labels = np.array([d if t else None for d, t in zip(declared, train & usable, strict=True)], dtype=object)
    selection = classify.select(training_labels, np.where(small, 0, comb.count), options.min_class_count)
    if len(selection.classes) < 2:
        raise ValueError(
            f"parcel markers: the training parcels hold {len(selection.classes)} crop(s) with at least "
            f"{options.min_class_count} parcels ({selection.excluded_classes}); lower --min-class-count or "
            "raise --train-fraction"
        )
    clf = training.Options(n_jobs=options.threads, seed=options.seed)
    booster, info = classify.fit(X[selection.rows], selection.y, len(selection.classes), clf)
    predict_rows = np.flatnonzero(~small)
    proba = classify.predict_proba(booster, X[predict_rows], len(selection.classes))
    predicted = np.full(n_parcels, None, dtype=object)
    probability = np.full(n_parcels, np.nan)
    predicted[predict_rows] = [selection.classes[i] for i in np.argmax(proba, axis=1)]
    probability[predict_rows] = proba.max(axis=1) if proba.size else []
    flag, order = markers.disagreements(declared, predicted, probability, options.disagreement_threshold)
    test = ~train & usable
    table = declarations[["parcel_id", "declared"]].copy()
    table["predicted"] = list(predicted)
    table["probability"] = probability
    table["disagreement"] = flag
    table["status"] = np.where(small, STATUS_TOO_SMALL, STATUS_OK)
    table["n_pixels"] = comb.count
    table["split"] = np.where(train, "train", np.where(test, "test", "none"))
    table["group"] = list(groups)
    table = table.set_geometry(declarations.geometry)
    legend_names = list(dict.fromkeys([*selection.classes, *[d for d in declared if d is not None]]))
    per_crop, confusion = agreement_tables(declared, predicted, test, legend_names)
    per_crop_all, confusion_all = agreement_tables(declared, predicted, ~small, legend_names)
    summary: dict[str, Any] = {
        "n_parcels": n_parcels,
        "status_counts": {STATUS_OK: int((~small).sum()), STATUS_TOO_SMALL: int(small.sum())},
        "undeclared": int(sum(d is None for d in declared)),
        "n_train": int((train & usable).sum()),
        "n_test": int(test.sum()),
        "n_groups": {"train": len(set(groups[train & usable])), "test": len(set(groups[test]))},
        "classes": selection.classes,
        "excluded_classes": selection.excluded_classes,
        "held_out": held_out_figures(declared, predicted, test, selection.classes, declared[train & usable]),
        "agreement_per_crop": per_crop,
        "confusion": confusion,
        "all_parcels": {
            "note": "training parcels included (in-sample)",
            "agreement_per_crop": per_crop_all,
            "confusion": confusion_all,
        },
        "disagreements": int(flag.sum()),
        "disagreement_threshold": options.disagreement_threshold,
        "training": info,
        "n_features": int(X.shape[1]),
        "feature_names": feats.feature_names,
        "dates": feats.dates,
        "n_tiles": feats.tiles,
        "disagreement_order": [int(i) for i in order],
    }
    return table, summary


def run(ctx: RunContext, options: Options) -> dict[str, Any]:
    """The season's parcel markers, written under ``parcel_markers/_run``; returns the summary."""
    import pandas as pd

    declarations = read_declarations(ctx, options)
    if len(declarations) == 0:
        raise ValueError(f"declarations for season {ctx.season}: no parcels")
    feats = parcel_features(ctx, declarations, options)
    table, summary = markers_table(declarations, feats, options)
    order = summary.pop("disagreement_order")
    uri = ctx.run_uri(NAME)
    summary = {"season": ctx.season, "uri": uri, "options": options.model_dump(mode="json"), **summary}
    columns = {}
    for name, stat in (("mean", feats.combined.mean), ("std", feats.combined.std)):
        for k, date in enumerate(feats.dates):
            for f, feat in enumerate(feats.feature_names):
                columns[f"{name}_{feat}_{date.replace('-', '')}"] = stat[:, k, f]
    full = table.join(pd.DataFrame(columns, index=table.index))
    marker = ctx.marker_meta(NAME, None, {"n_parcels": summary["n_parcels"], "held_out": summary["held_out"]})
    with ctx.storage.writing_dir(uri, marker) as staging:
        full.to_parquet(staging / "parcels.parquet", index=False)
        table.to_file(staging / "parcels.gpkg", driver="GPKG", layer="parcels")
        flagged = table.iloc[order].drop(columns=table.geometry.name)
        pd.DataFrame(flagged).to_csv(staging / "disagreements.csv", index=False)
        _write_json(staging / "summary.json", summary)
    log.info("parcel markers: %s parcels, held-out agreement %s, wrote %s", len(table), summary["held_out"], uri)
    return summary


def _write_json(path: Path, obj: Any) -> None:
    import json

    path.write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")


def read_summary(ctx: RunContext) -> dict[str, Any] | None:
    """The season's parcel markers summary, or None when they were not computed."""
    uri = ctx.run_uri(NAME)
    if not ctx.storage.is_complete(uri):
        return None
    summary: dict[str, Any] = ctx.storage.read_json(f"{uri}/summary.json")
    return summary
