"""LCMS's features of each parcel: one row per parcel, the same functions as the features stage.

For every parcel of a :class:`~lcms_tasks.parcels.table.ParcelTable`:

1. per observation, the bands as reflectance and the spectral indices of
   :mod:`lcms_tasks.features.indices` that the table's bands allow (an index
   whose bands are missing is skipped and reported, never an error);
2. the features stage's temporal harmonisation
   (:func:`lcms_tasks.features.temporal.interpolate_linear`): the parcel's valid
   observations interpolated linearly onto a date grid, held constant before
   the first / after the last valid one (so a parcel without a valid month at
   the start or the end of the season still has every date). The grid is the
   table's own dates by default (a monthly composite product is already on a
   grid: its no-data months are filled from their neighbours), or every
   ``step_days`` days from the table's first date;
3. optionally, temporal statistics of each per-date feature over the grid
   (:mod:`lcms_tasks.features.statistics`: percentiles, amplitude, date of peak...).

The defaults (:mod:`.defaults`: the bands and the six indices of the features
stage, every date, no statistics) are what raised cross-validated macro-F1 on
real parcels; no date is dropped table-wide (a table is not a tile: each
parcel's own no-data dates are interpolated).

A parcel with no valid observation at all has NaN features and ``n_valid == 0``;
the callers never train on it nor guess a class for it (see :mod:`.classify`).

Columns: the per-date series time-major (``B02_t00, ..., NDVI_t00, ..., B02_t01, ...``,
the naming of :mod:`lcms_tasks.ml.matrix`), then the statistics
(``NDVI_p90``, ...).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
from pydantic import Field, field_validator, model_validator

from lcms_tasks.features import indices, statistics, temporal
from lcms_tasks.ml.matrix import flat_feature_names
from lcms_tasks.parcels.defaults import DEFAULT_INDICES, DEFAULT_STATISTICS
from lcms_tasks.parcels.table import ParcelTable
from lcms_tasks.schema import StrictModel


class FeatureOptions(StrictModel):
    """Which features a parcel row holds."""

    bands: bool = Field(True, description="The table's bands themselves (reflectance) beside the indices.")
    indices: tuple[str, ...] = Field(
        DEFAULT_INDICES, description="Spectral indices per date; those whose bands the table lacks are skipped."
    )
    time_series: bool = Field(True, description="The per-date values on the date grid.")
    statistics: tuple[str, ...] = Field(
        DEFAULT_STATISTICS, description="Temporal statistics of every per-date feature over the grid."
    )
    step_days: int | None = Field(
        None,
        ge=1,
        le=366,
        description="Date grid: every step_days days from the table's first date; None: the table's own dates.",
    )
    quantification: float = Field(
        10000.0, gt=0.0, description="Band values are reflectance x quantification (10000: Sentinel-2 DN)."
    )

    @field_validator("indices")
    @classmethod
    def _known_indices(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in v if name not in indices.INDEX_NAMES]
        if unknown:
            raise ValueError(f"unknown index(es) {unknown}; known: {', '.join(indices.INDEX_NAMES)}")
        return indices.check_feature_names(v)

    @field_validator("statistics")
    @classmethod
    def _known_statistics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return statistics.check_statistics(v)

    @model_validator(mode="after")
    def _something(self) -> FeatureOptions:
        if not (self.bands or self.indices):
            raise ValueError("no feature per date: keep the bands or list indices")
        if not (self.time_series or self.statistics):
            raise ValueError("no feature: keep the time series or list temporal statistics")
        return self


@dataclasses.dataclass
class ParcelFeatures:
    """The feature matrix of a table's parcels (rows in the table's parcel order)."""

    X: np.ndarray  # (P, n_features) float32, NaN only for parcels with n_valid == 0
    names: list[str]
    n_valid: np.ndarray  # (P,) valid observations per parcel
    per_date: list[str]  # features per date (bands and indices), in column order
    skipped_indices: dict[str, list[str]]  # index -> the bands it lacks
    grid: list[dt.date]  # the date grid
    grid_offsets: list[int]  # days of the grid from its first date


def date_grid(dates: np.ndarray, step_days: int | None, offsets: list[int] | None = None) -> list[dt.date]:
    """The date grid of a table's (sorted) dates.

    ``offsets`` (days from the table's first date; a stored model's grid) wins; else ``step_days``
    from the first date up to the last; else the table's own dates.
    """
    days = dates.astype("datetime64[D]")
    first = days[0].astype(dt.date)
    if offsets is not None:
        return [first + dt.timedelta(days=int(o)) for o in offsets]
    if step_days is not None:
        return temporal.regular_dates(first, days[-1].astype(dt.date), step_days)
    return sorted({d.astype(dt.date) for d in days})


def per_date_features(table_bands: list[str], options: FeatureOptions) -> tuple[list[str], dict[str, list[str]]]:
    """(features per date, {skipped index: missing bands}) for a table with ``table_bands``."""
    kept, skipped = indices.computable_features(options.indices, table_bands)
    bands = list(table_bands) if options.bands else []
    return [*bands, *kept], skipped


def parcel_features(
    table: ParcelTable,
    options: FeatureOptions,
    *,
    grid_offsets: list[int] | None = None,
    per_date: list[str] | None = None,
) -> ParcelFeatures:
    """The feature matrix of every parcel of ``table``.

    ``grid_offsets`` and ``per_date`` (from a stored model) fix the grid and the features per date;
    by default they follow from ``options`` and the table's bands.
    """
    if per_date is None:
        per_date, skipped = per_date_features(table.bands, options)
    else:
        skipped = {}
    grid = date_grid(table.dates, options.step_days, grid_offsets)
    origin = grid[0]
    times = (table.dates.astype("datetime64[s]") - np.datetime64(origin, "s")) / np.timedelta64(1, "D")
    targets = np.array([(d - origin).days for d in grid], dtype=np.float64)
    n_parcels = len(table.ids)
    values = indices.compute_indices(
        table.values, table.bands, quantification=options.quantification, features=per_date
    )  # (T, P, F); NaN wherever a band used is missing
    series, n_valid = temporal.interpolate_linear(
        values[:, :, None, :], table.valid[:, :, None], times.astype(np.float64), targets
    )
    series = series[:, :, 0, :]  # (K, P, F)
    parts, names = [], []
    if options.time_series:
        parts.append(np.ascontiguousarray(series.transpose(1, 0, 2)).reshape(n_parcels, -1))
        names += flat_feature_names(per_date, len(grid))
    if options.statistics:
        parts.append(statistics.temporal_statistics(series, targets, options.statistics))
        names += statistics.statistic_names(per_date, options.statistics)
    X = np.concatenate(parts, axis=1) if parts else np.zeros((n_parcels, 0), np.float32)
    return ParcelFeatures(
        X=np.ascontiguousarray(X, dtype=np.float32),
        names=names,
        n_valid=n_valid[:, 0].astype(np.int64),
        per_date=list(per_date),
        skipped_indices=skipped,
        grid=grid,
        grid_offsets=[int(t) for t in targets],
    )
