"""Reference ingestion: a national parcel file, cadastre, OSM extract, manual labels or confirmed
changes -> one clean, crosswalked GeoPackage of labelled polygons plus a JSON report that
accounts for every record read.

Rules (the contract of ``lcms reference ingest``):

* Every record read ends up either kept or dropped for exactly one reason, checked in this
  order: ``missing_code`` (null/blank code), ``invalid_date`` (``--date-column`` given and the
  value cannot be read as a year or range of years), ``other_year`` (outside ``--year``),
  ``unknown_code`` (not in the crosswalk; listed with counts in ``unknown_codes``),
  ``excluded_code`` (crosswalked to class 0 on purpose, e.g. hedges and ditches in a crop
  file), ``not_polygon`` (points, lines), ``invalid_geometry`` (null, empty, or invalid and
  not repairable into an areal geometry), ``sliver`` (area below ``--min-area-m2``),
  ``duplicate`` (same geometry and class as an earlier record), ``overlap_conflict`` (see
  below). ``kept + sum(dropped) == read`` is checked before anything is written.
* Invalid geometries are repaired with ``make_valid`` (only the areal part kept) and counted
  as ``repaired``; they are not dropped.
* Overlaps within one source between polygons of *different* classes: an overlap smaller
  than ``overlap_tolerance`` (1 %) of the smaller polygon is left alone (rasterisation
  resolves those pixels). Otherwise the larger polygon wins: the overlap is cut out of the
  smaller one (counted ``trimmed``), which is dropped as ``overlap_conflict`` if less than
  ``min_keep_share`` (50 %) of it remains. Polygons of equal area (e.g. the same field
  declared twice with two crops) both lose the overlap, so both are usually dropped.
* Dates: ``'2018'``, ``'2018-08-11'``, ``'11.08.2018'``, ``'2018-08'``, dates/timestamps and
  year numbers give that year; a range ``'2016-2017'`` (or ``2016/2017``) gives its LAST
  year, the harvest year of a winter crop sown in autumn 2016. Records are labelled with
  that year (``--year`` when no date column is given; 0 = unknown).
* An input with zero records is an error (exit code 2; a national file with no record is
  almost always a wrong layer or a broken export), as are a missing, unreadable or CRS-less
  file and a missing code column. Nothing is written on error; outputs are written to a
  temporary name and renamed.
* Keeping zero records (every code unknown, every record of another year...) makes nothing
  useful: the CLI logs a warning naming the drop reasons and the unknown codes per crosswalk
  step (:func:`empty_ingest_message`) and fails with ``EmptyResultError`` (nothing written)
  unless ``--allow-empty``, which writes the empty GeoPackage and the report.
* The crosswalk may be a chain (national code -> HCAT3 code -> class, see
  :mod:`lcms_tasks.reference.crosswalk`): a record whose code is lost at any step is
  ``unknown_code``; the report's ``crosswalk_steps`` lists per step the codes (as looked up at
  that step) it did not know, and their counts add up to ``dropped.unknown_code``.

Fusion (:func:`fuse_frames`) merges several ingested files: on a conflicting overlap the
higher ``priority`` wins (the lower polygon loses the overlap, and is dropped as
``overridden`` when less than half of it remains); equal priorities with conflicting classes
both lose the overlap (``overlap_conflict`` when less than half remains). Exact duplicates
(same geometry and class) keep the highest-priority copy.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import ConfigError
from lcms_tasks.reference.crosswalk import Crosswalk, CrosswalkChain, as_chain, normalise_code
from lcms_tasks.reference.sources import NULL_CODE, gdal_path

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

SOURCE_TYPES: tuple[str, ...] = ("lpis", "cadastre", "osm", "manual", "confirmed_changes")
#: Default priority per source type (higher wins on fusion): field checks beat declarations beat maps.
DEFAULT_PRIORITY: dict[str, int] = {"confirmed_changes": 50, "manual": 40, "lpis": 30, "cadastre": 20, "osm": 10}
#: Drop reasons, in the order they are checked (a record gets the first that applies).
DROP_REASONS: tuple[str, ...] = (
    "missing_code",
    "invalid_date",
    "other_year",
    "unknown_code",
    "excluded_code",
    "not_polygon",
    "invalid_geometry",
    "sliver",
    "duplicate",
    "overlap_conflict",
)
FUSE_DROP_REASONS: tuple[str, ...] = ("invalid_geometry", "duplicate", "overridden", "overlap_conflict")
OUTPUT_COLUMNS: tuple[str, ...] = (
    "class_id",
    "class_name",
    "source_code",
    "source_type",
    "year",
    "priority",
    "source_file",
    "record_id",
)
OUTPUT_LAYER = "reference"
_SCHEMA = {
    "geometry": "MultiPolygon",
    "properties": {
        "class_id": "int",
        "class_name": "str",
        "source_code": "str",
        "source_type": "str",
        "year": "int",
        "priority": "int",
        "source_file": "str",
        "record_id": "int",
    },
}
OVERLAP_RULE = (
    "conflicting overlaps above the tolerance share of the smaller polygon: the higher rank wins and the overlap "
    "is cut from the other polygon (trimmed), which is dropped if less than min_keep_share of it remains; "
    "rank = (priority, area) within a source, priority alone when fusing; equal rank: both lose the overlap"
)
DATE_RULE = "single year/date -> that year; range 'YYYY-YYYY' -> its last year (harvest year); unparseable -> invalid"


# -- dates ------------------------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d{4})\s*[-/–]\s*(\d{4})$")
_YEAR = re.compile(r"^(\d{4})(?:\.0+)?$")
_YMD = re.compile(r"^(\d{4})[-/.](\d{1,2})(?:[-/.](\d{1,2}))?(?:[T ].*)?$")
_DMY = re.compile(r"^(\d{1,2})[./-](\d{1,2})[./-](\d{4})(?:[T ].*)?$")


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def parse_years(value: Any) -> tuple[int, int] | None:
    """(first, last) year of a date-ish value, or None when it cannot be read.

    Accepts years (``2018``, ``'2018'``, ``2018.0``), ranges (``'2016-2017'``, ``'2016/2017'``),
    ISO dates and months (``'2018-08-11'``, ``'2018-08'``, with an optional time), day-first
    dates (``'11.08.2018'``, ``'11/08/2018'``) and date/datetime objects.
    """
    if value is None:
        return None
    if isinstance(value, dt.date):  # also datetime, pandas Timestamp and NaT (whose year is NaN)
        try:
            year = int(value.year)
        except (TypeError, ValueError):
            return None
        return (year, year) if 1000 <= year <= 9999 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        y = int(value)
        return (y, y) if 1000 <= y <= 9999 else None
    if isinstance(value, float | np.floating):
        if not np.isfinite(value) or not float(value).is_integer():
            return None
        return parse_years(int(value))
    text = str(value).strip()
    if not text or text.lower() in ("nat", "nan", "none", "null"):
        return None
    if m := _RANGE.match(text):
        a, b = int(m.group(1)), int(m.group(2))
        return (a, b) if a <= b else None
    if m := _YEAR.match(text):
        return (int(m.group(1)),) * 2
    if m := _YMD.match(text):
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        return (y, y) if _valid_date(y, mo, d) else None
    if m := _DMY.match(text):
        d, mo, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        return (y, y) if _valid_date(y, mo, d) else None
    return None


def record_year(value: Any) -> int | None:
    """The year a record serves: the year of a date, the LAST year of a range; None if unreadable."""
    years = parse_years(value)
    return None if years is None else years[1]


# -- reading ------------------------------------------------------------------------------------------


def read_vector(path: Path, layer: str | None = None, *, allow_empty: bool = False) -> gpd.GeoDataFrame:
    """Read any vector file GDAL reads (and GeoParquet) as a GeoDataFrame with a CRS and records.

    ``.zip`` goes through ``/vsizip/``, ``.osm``/``.pbf`` default to the OSM driver's
    ``multipolygons`` layer. ``ConfigError`` names the file and the problem: missing, empty
    (0 bytes, or 0 records unless ``allow_empty``), unreadable/corrupt, or without a CRS.
    """
    import geopandas as gpd

    if not path.exists():
        raise ConfigError(f"reference file {path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise ConfigError(f"reference file {path} is empty (0 bytes)")
    name = path.name.lower()
    where = f"reference file {path}{f' layer {layer!r}' if layer else ''}"
    try:
        if name.endswith((".parquet", ".geoparquet")):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ConfigError(
                    f"{where}: reading GeoParquet needs the 'pyarrow' package, which is not installed "
                    "(install it, or convert the file to GeoPackage with ogr2ogr)"
                ) from None
            frame = gpd.read_parquet(path)
        else:
            src = gdal_path(path)
            if name.endswith((".osm.pbf", ".pbf", ".osm")):
                import fiona

                # GDAL has a read-only OSM driver; fiona only opens drivers it lists, so list it (read-only).
                fiona.supported_drivers.setdefault("OSM", "r")
                layer = layer or "multipolygons"
            frame = gpd.read_file(src, layer=layer) if layer else gpd.read_file(src)
    except ConfigError:
        raise
    except Exception as err:  # GDAL/fiona/arrow raise many types; all mean "cannot read this file"
        raise ConfigError(f"cannot read {where}: {err}") from err
    if len(frame) == 0 and not allow_empty:
        raise ConfigError(f"{where} has no records (0 features); check the layer or the export")
    if frame.crs is None:
        raise ConfigError(f"{where} has no CRS; give it one (e.g. a .prj next to a Shapefile, or ogr2ogr -a_srs)")
    return frame


# -- geometry helpers -------------------------------------------------------------------------------

_AREAL = ("Polygon", "MultiPolygon")


def polygonal_part(geom: Any) -> Any:
    """The areal part of ``geom`` as a (Multi)Polygon, or None if it has none."""
    import shapely

    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in _AREAL:
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [polygonal_part(g) for g in geom.geoms]
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        merged = shapely.union_all(parts)
        return merged if merged.geom_type in _AREAL and not merged.is_empty else None
    return None


def clean_geometry(geom: Any) -> tuple[Any, str]:
    """(geometry, status) with status 'ok', 'repaired', 'not_polygon' or 'invalid_geometry'.

    Points and lines are 'not_polygon'; null/empty/zero-area or unrepairable polygons are
    'invalid_geometry'; invalid polygons fixed by ``make_valid`` are 'repaired'.
    """
    import shapely

    if geom is None or geom.is_empty:
        return None, "invalid_geometry"
    if geom.geom_type == "GeometryCollection":
        areal = polygonal_part(geom)
        if areal is None:
            return None, "not_polygon"
        geom = areal
    elif geom.geom_type not in _AREAL:
        return None, "not_polygon"
    if shapely.is_valid(geom):
        return (geom, "ok") if geom.area > 0 else (None, "invalid_geometry")
    fixed = polygonal_part(shapely.make_valid(geom))
    if fixed is None or fixed.area <= 0:
        return None, "invalid_geometry"
    return fixed, "repaired"


def metric_areas(geoms: gpd.GeoSeries) -> np.ndarray:
    """Areas in m²: in the CRS itself when it is projected in metres, else in the local UTM zone."""
    if len(geoms) == 0:
        return np.zeros(0)
    crs = geoms.crs
    metres = (
        crs is not None
        and crs.is_projected
        and all((a.unit_name or "").lower() in ("metre", "meter", "m") for a in crs.axis_info)
    )
    valid = geoms.notna() & ~geoms.is_empty
    out = np.zeros(len(geoms))
    if not valid.any():
        return out
    if metres:
        out[valid.to_numpy()] = geoms[valid].area.to_numpy()
    else:
        sub = geoms[valid]
        out[valid.to_numpy()] = sub.to_crs(sub.estimate_utm_crs()).area.to_numpy()
    return out


def geometry_keys(geoms: Sequence[Any] | np.ndarray) -> list[bytes]:
    """Exact-duplicate keys: WKB of the normalised geometry (vertex order and start point ignored)."""
    import shapely

    arr = np.asarray(list(geoms), dtype=object)
    return [bytes(b) for b in shapely.to_wkb(shapely.normalize(arr))]


@dataclass
class OverlapResult:
    """Result of :func:`resolve_overlaps`: geometries after trimming and a status per polygon."""

    geometries: list[Any]
    status: list[str]  # 'kept', 'trimmed', 'overridden', 'overlap_conflict'


def resolve_overlaps(
    geoms: Sequence[Any],
    classes: Sequence[int],
    ranks: Sequence[tuple[float, ...]],
    *,
    tolerance: float = 0.01,
    min_keep_share: float = 0.5,
) -> OverlapResult:
    """Resolve overlaps between polygons of different classes.

    Polygons are processed by descending rank (ties in input order). An overlap with an
    already processed, still kept polygon of another class counts when its area exceeds
    ``tolerance`` x the smaller polygon's area. A higher-ranked polygon keeps the overlap
    and the overlap is cut from the lower one; equal ranks both lose it. A polygon left with
    less than ``min_keep_share`` of its area is dropped: 'overridden' when only higher-ranked
    polygons took its area, else 'overlap_conflict'. Same-class overlaps are left alone.
    """
    import shapely

    n = len(geoms)
    current = list(geoms)
    status = ["kept"] * n
    if n < 2:
        return OverlapResult(current, status)
    arr = np.asarray(current, dtype=object)
    original_area = shapely.area(arr).astype(float)
    tree = shapely.STRtree(arr)
    left, right = tree.query(arr, predicate="intersects")
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        if a != b and classes[a] != classes[b]:
            neighbours.setdefault(a, []).append(b)
    order = sorted(range(n), key=lambda i: (tuple(-x for x in ranks[i]), i))
    processed = np.zeros(n, bool)
    tie_loss = np.zeros(n, bool)

    def settle(k: int) -> None:
        geom = polygonal_part(current[k])
        current[k] = geom
        share = 0.0 if geom is None else geom.area / original_area[k] if original_area[k] > 0 else 0.0
        if share < min_keep_share:
            status[k] = "overlap_conflict" if tie_loss[k] else "overridden"
        elif status[k] == "kept":
            status[k] = "trimmed"

    for i in order:
        cuts: list[Any] = []
        mutual: list[tuple[int, Any]] = []
        for j in neighbours.get(i, ()):
            if not processed[j] or status[j] in ("overridden", "overlap_conflict") or current[j] is None:
                continue
            if current[i] is None:
                break
            overlap = shapely.intersection(current[i], current[j])
            if overlap.is_empty or overlap.area <= tolerance * min(original_area[i], original_area[j]):
                continue
            cuts.append(overlap)
            if tuple(ranks[j]) == tuple(ranks[i]):
                tie_loss[i] = tie_loss[j] = True
                mutual.append((j, overlap))
        processed[i] = True
        if cuts:
            current[i] = shapely.difference(current[i], shapely.union_all(cuts))
            settle(i)
        for j, overlap in mutual:
            current[j] = shapely.difference(current[j], overlap)
            settle(j)
    return OverlapResult(current, status)


# -- ingestion ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestOptions:
    """What to ingest and how (see :func:`ingest_frame`)."""

    code_columns: tuple[str, ...]
    source_type: str = "manual"
    source_file: str = ""
    year: int | None = None
    date_column: str | None = None
    min_area_m2: float = 0.0
    priority: int | None = None
    overlap_tolerance: float = 0.01
    min_keep_share: float = 0.5

    @property
    def effective_priority(self) -> int:
        """``priority`` or the source type's default."""
        return self.priority if self.priority is not None else DEFAULT_PRIORITY.get(self.source_type, 0)


@dataclass
class IngestResult:
    """Kept polygons (output columns, source CRS) and the report dict."""

    frame: gpd.GeoDataFrame
    report: dict[str, Any] = field(default_factory=dict)


def record_codes(frame: gpd.GeoDataFrame, columns: Sequence[str]) -> list[str]:
    """Normalised code per record. One column: its value; several: ``'column=value'`` of the first
    non-null one (e.g. OSM ``landuse,natural`` -> ``'landuse=farmland'``)."""
    if len(columns) == 1:
        return [normalise_code(v) for v in frame[columns[0]].to_numpy()]
    values = [[normalise_code(v) for v in frame[c].to_numpy()] for c in columns]
    out: list[str] = []
    for row in zip(*values, strict=True):
        code = next((f"{c}={v}" for c, v in zip(columns, row, strict=True) if v != NULL_CODE), NULL_CODE)
        out.append(code)
    return out


def check_columns(frame: gpd.GeoDataFrame, options: IngestOptions, where: str) -> None:
    """``ConfigError`` naming the file and the available columns if a code/date column is absent."""
    available = [c for c in frame.columns if c != frame.geometry.name]
    for col in options.code_columns:
        if col not in frame.columns:
            raise ConfigError(f"{where} has no code column {col!r}; available columns: {available}")
    if options.date_column and options.date_column not in frame.columns:
        raise ConfigError(f"{where} has no date column {options.date_column!r}; available columns: {available}")


def _class_rows(classes: Sequence[int], names: Sequence[str], areas: Sequence[float]) -> list[dict[str, Any]]:
    agg: dict[int, dict[str, Any]] = {}
    for cid, name, area in zip(classes, names, areas, strict=True):
        row = agg.setdefault(int(cid), {"class_id": int(cid), "class_name": name, "count": 0, "area_m2": 0.0})
        row["count"] += 1
        row["area_m2"] += float(area)
    return [agg[k] for k in sorted(agg)]


def check_accounting(report: dict[str, Any], where: str) -> None:
    """Raise if ``kept + sum(dropped) != read`` (a bug: every record must be accounted for)."""
    total = int(report["kept"]) + sum(int(v) for v in report["dropped"].values())
    if total != int(report["read"]):
        raise AssertionError(
            f"{where}: accounting broken: kept {report['kept']} + dropped {sum(report['dropped'].values())} "
            f"!= read {report['read']}"
        )


def ingest_frame(
    frame: gpd.GeoDataFrame, crosswalk: Crosswalk | CrosswalkChain, options: IngestOptions
) -> IngestResult:
    """Clean and crosswalk ``frame`` (any CRS) following the module's rules.

    ``crosswalk`` (one crosswalk or a chain) must be resolved (:meth:`Crosswalk.resolve`). Returns
    the kept polygons with the output columns (geometry in ``frame``'s CRS, as MultiPolygons) and
    the report. ``unknown_codes`` lists the records' own codes; ``crosswalk_steps`` says per step
    which codes (as looked up at that step, e.g. the HCAT3 code of a national code) were unknown.
    """
    import geopandas as gpd
    import shapely

    where = f"reference file {options.source_file or '<frame>'}"
    check_columns(frame, options, where)
    n = len(frame)
    reason = np.full(n, "", dtype=object)
    codes = record_codes(frame, options.code_columns)
    reason[np.array([c == NULL_CODE for c in codes], bool)] = "missing_code"

    years: list[int | None] = [options.year] * n
    if options.date_column:
        years = [record_year(v) for v in frame[options.date_column].to_numpy()]
        for i, y in enumerate(years):
            if reason[i] == "" and y is None:
                reason[i] = "invalid_date"
    if options.year is not None:
        for i, y in enumerate(years):
            if reason[i] == "" and y != options.year:
                reason[i] = "other_year"

    scope = tuple(s for s in (options.source_type, Path(options.source_file).stem) if s)
    chain = as_chain(crosswalk)
    class_id = np.zeros(n, np.int64)
    class_name = np.full(n, "", dtype=object)
    unknown: Counter[str] = Counter()
    unknown_at: list[Counter[str]] = [Counter() for _ in chain.steps]
    excluded: Counter[str] = Counter()
    for i in np.flatnonzero(reason == ""):
        trace = chain.trace(codes[i], year=years[i], source=scope)
        hit = trace.cls
        if hit is None:
            reason[i] = "unknown_code"
            unknown[codes[i]] += 1
            unknown_at[trace.step if trace.step is not None else 0][trace.code] += 1
        elif hit.id == 0:
            reason[i] = "excluded_code"
            excluded[codes[i]] += 1
        else:
            class_id[i], class_name[i] = hit.id, hit.name

    geoms = np.empty(n, dtype=object)
    repaired = np.zeros(n, bool)
    source_geoms = frame.geometry.to_numpy()
    for i in np.flatnonzero(reason == ""):
        geom, status = clean_geometry(source_geoms[i])
        if status in ("not_polygon", "invalid_geometry"):
            reason[i] = status
        else:
            geoms[i] = shapely.force_2d(geom)
            repaired[i] = status == "repaired"

    alive = np.flatnonzero(reason == "")
    areas = np.zeros(n)
    if alive.size:
        areas[alive] = metric_areas(gpd.GeoSeries(list(geoms[alive]), crs=frame.crs))
    if options.min_area_m2 > 0:
        reason[alive[areas[alive] < options.min_area_m2]] = "sliver"

    alive = np.flatnonzero(reason == "")
    seen: set[tuple[int, bytes]] = set()
    for i, key in zip(alive.tolist(), geometry_keys(geoms[alive]), strict=True):
        if (int(class_id[i]), key) in seen:
            reason[i] = "duplicate"
        else:
            seen.add((int(class_id[i]), key))

    alive = np.flatnonzero(reason == "")
    trimmed = np.zeros(n, bool)
    if alive.size > 1:
        result = resolve_overlaps(
            list(geoms[alive]),
            [int(c) for c in class_id[alive]],
            [(float(options.effective_priority), float(a)) for a in areas[alive]],
            tolerance=options.overlap_tolerance,
            min_keep_share=options.min_keep_share,
        )
        for k, i in enumerate(alive.tolist()):
            st = result.status[k]
            if st in ("overridden", "overlap_conflict"):
                reason[i] = "overlap_conflict"
            elif st == "trimmed":
                geoms[i] = result.geometries[k]
                trimmed[i] = True
        changed = alive[trimmed[alive]]
        if changed.size:
            areas[changed] = metric_areas(gpd.GeoSeries(list(geoms[changed]), crs=frame.crs))

    kept = np.flatnonzero(reason == "")
    out_geoms = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms[kept]]
    out = gpd.GeoDataFrame(
        {
            "class_id": class_id[kept].astype(np.int64),
            "class_name": [str(v) for v in class_name[kept]],
            "source_code": [codes[i] for i in kept],
            "source_type": options.source_type,
            "year": np.array([years[i] or 0 for i in kept], dtype=np.int64),
            "priority": np.full(len(kept), options.effective_priority, dtype=np.int64),
            "source_file": options.source_file,
            "record_id": kept.astype(np.int64),
        },
        geometry=out_geoms,
        crs=frame.crs,
    )
    dropped = Counter(str(r) for r in reason if r)
    year_counts = Counter(int(years[i] or 0) for i in kept)
    report: dict[str, Any] = {
        "source_file": options.source_file,
        "source_type": options.source_type,
        "code_columns": list(options.code_columns),
        "crosswalk": chain.describe(),
        "crosswalk_steps": [
            {
                "file": str(step.path),
                "code_column": step.code_column,
                "target_column": step.target_column,
                "target": "class" if k == len(chain) - 1 else "code",
                "rows": len(step),
                "rows_without_code_skipped": len(step.skipped_lines),
                "unknown": int(sum(unknown_at[k].values())),
                "unknown_codes": _by_count(unknown_at[k]),
            }
            for k, step in enumerate(chain.steps)
        ],
        "crs": frame.crs.to_string() if frame.crs is not None else None,
        "year": options.year,
        "date_column": options.date_column,
        "priority": options.effective_priority,
        "min_area_m2": options.min_area_m2,
        "read": n,
        "kept": len(kept),
        "dropped": {r: int(dropped.get(r, 0)) for r in DROP_REASONS},
        "repaired": int(repaired[kept].sum()),
        "repaired_total": int(repaired.sum()),
        "trimmed": int(trimmed[kept].sum()),
        "unknown_codes": _by_count(unknown),
        "excluded_codes": _by_count(excluded),
        "classes": _class_rows(class_id[kept].tolist(), [str(v) for v in class_name[kept]], areas[kept].tolist()),
        "kept_area_m2": float(areas[kept].sum()),
        "years": {str(k): v for k, v in sorted(year_counts.items())},
        "rules": {"overlap": OVERLAP_RULE, "dates": DATE_RULE, "record_id": "0-based position in the file"},
    }
    check_accounting(report, where)
    if sum(step["unknown"] for step in report["crosswalk_steps"]) != report["dropped"]["unknown_code"]:
        raise AssertionError(f"{where}: unknown codes per crosswalk step do not add up to dropped.unknown_code")
    return IngestResult(out, report)


def _by_count(counts: Counter[str]) -> dict[str, int]:
    """``counts`` as a dict, most frequent first (ties by code)."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def empty_ingest_message(report: dict[str, Any]) -> str:
    """Why an ingestion kept nothing, in one line: what was read, the drop reasons, the unknown codes per step."""
    dropped = {k: v for k, v in report["dropped"].items() if v}
    parts = [f"reference file {report['source_file']}: kept 0 of {report['read']} record(s) (dropped: {dropped})"]
    for k, step in enumerate(report.get("crosswalk_steps", [])):
        if step["unknown"]:
            codes = list(step["unknown_codes"].items())
            shown = ", ".join(f"{c!r} x{n}" for c, n in codes[:10]) + (", ..." if len(codes) > 10 else "")
            parts.append(f"unknown at crosswalk step {k + 1} ({step['file']}, column {step['code_column']!r}): {shown}")
    return "; ".join(parts)


# -- writing ------------------------------------------------------------------------------------------


def _tmp_sibling(path: Path, suffix: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # GDAL wants to create the file itself
    return tmp


def write_outputs(frame: gpd.GeoDataFrame, out: Path, report: dict[str, Any], report_path: Path | None) -> None:
    """Write ``frame`` to GeoPackage ``out`` and ``report`` to JSON, each to a temporary name then renamed.

    The GeoPackage goes first: a report next to it always describes a complete file.
    """
    tmp_gpkg = _tmp_sibling(out, ".gpkg")
    try:
        frame = frame[[*OUTPUT_COLUMNS, frame.geometry.name]]
        frame.to_file(tmp_gpkg, driver="GPKG", layer=OUTPUT_LAYER, schema=_SCHEMA, engine="fiona")
        os.replace(tmp_gpkg, out)
    finally:
        if Path(tmp_gpkg).exists():
            os.unlink(tmp_gpkg)
    if report_path is not None:
        from lcms_tasks.storage import atomic_write_bytes

        report_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(report_path, json.dumps(report, indent=1, sort_keys=False).encode())


def ingest_file(
    source: Path,
    crosswalk: Crosswalk | CrosswalkChain,
    options: IngestOptions,
    *,
    layer: str | None = None,
    to_crs: str | None = None,
) -> IngestResult:
    """Read ``source`` and ingest it (nothing written). ``ConfigError`` names the file on bad input."""
    frame = read_vector(source, layer)
    check_columns(frame, options, f"reference file {source}")
    result = ingest_frame(frame, crosswalk, options)
    if to_crs:
        try:
            result.frame = result.frame.to_crs(to_crs)
        except Exception as err:  # pyproj raises several types for a bad CRS string
            raise ConfigError(f"--to-crs {to_crs!r} is not a CRS pyproj understands: {err}") from err
        result.report["output_crs"] = result.frame.crs.to_string()
    else:
        result.report["output_crs"] = result.report["crs"]
    log.info(
        "%s: read %d, kept %d, dropped %s",
        source,
        result.report["read"],
        result.report["kept"],
        {k: v for k, v in result.report["dropped"].items() if v},
    )
    return result


# -- fusion ---------------------------------------------------------------------------------------------


def read_ingested(path: Path, *, allow_empty: bool = False) -> gpd.GeoDataFrame:
    """An ingested GeoPackage (``ConfigError`` naming the file and the missing columns otherwise).

    ``allow_empty``: a file without polygons (``ingest --allow-empty``) is read as an empty frame.
    """
    import fiona

    layers: list[str] = []
    if path.exists() and path.stat().st_size > 0:
        try:
            layers = list(fiona.listlayers(str(path)))
        except Exception:  # not a GeoPackage: read_vector names the problem below
            layers = []
    frame = read_vector(path, OUTPUT_LAYER if OUTPUT_LAYER in layers else None, allow_empty=allow_empty)
    missing = [c for c in OUTPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"reference file {path} is not an ingested reference file: missing column(s) {missing} "
            "(create it with `lcms reference ingest`)"
        )
    return frame


def fuse_frames(
    inputs: Sequence[tuple[str, gpd.GeoDataFrame]], *, to_crs: str | None = None, tolerance: float = 0.01
) -> IngestResult:
    """Merge ingested frames (see the module docstring for the priority rules)."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    if not inputs:
        raise ConfigError("fuse needs at least one input file")
    target = to_crs or inputs[0][1].crs
    names: dict[int, tuple[str, str]] = {}
    parts = []
    for k, (name, frame) in enumerate(inputs):
        for cid, cname in set(zip(frame["class_id"].astype(int), frame["class_name"].astype(str), strict=True)):
            if cid in names and names[cid][0] != cname:
                raise ConfigError(
                    f"fuse: class id {cid} is {cname!r} in {name} but {names[cid][0]!r} in {names[cid][1]}; "
                    "ingest all inputs against the same legend (--config)"
                )
            names[cid] = (cname, name)
        part = frame[[*OUTPUT_COLUMNS, frame.geometry.name]].to_crs(target)
        part = part.rename_geometry("geometry") if part.geometry.name != "geometry" else part
        part["_input"] = k
        parts.append(part)
    allf = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=target)
    n = len(allf)
    reason = np.full(n, "", dtype=object)
    geoms = np.empty(n, dtype=object)
    for i, g in enumerate(allf.geometry.to_numpy()):
        clean, _status = clean_geometry(g)
        if clean is None:
            reason[i] = "invalid_geometry"
        else:
            geoms[i] = clean
    prio = allf["priority"].to_numpy().astype(float)
    cls = allf["class_id"].to_numpy().astype(int)
    alive = np.flatnonzero(reason == "")
    order = sorted(alive.tolist(), key=lambda i: (-prio[i], i))
    keys = dict(zip(order, geometry_keys(geoms[order]) if order else [], strict=True))
    seen: set[tuple[int, bytes]] = set()
    for i in order:
        if (cls[i], keys[i]) in seen:
            reason[i] = "duplicate"
        else:
            seen.add((cls[i], keys[i]))
    alive = np.flatnonzero(reason == "")
    trimmed = np.zeros(n, bool)
    if alive.size > 1:
        res = resolve_overlaps(
            list(geoms[alive]), cls[alive].tolist(), [(prio[i],) for i in alive], tolerance=tolerance
        )
        for k, i in enumerate(alive.tolist()):
            if res.status[k] in ("overridden", "overlap_conflict"):
                reason[i] = res.status[k]
            elif res.status[k] == "trimmed":
                geoms[i], trimmed[i] = res.geometries[k], True
    kept = np.flatnonzero(reason == "")
    out = allf.iloc[kept].drop(columns="_input").copy()
    out["geometry"] = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms[kept]]
    out = gpd.GeoDataFrame(out, geometry="geometry", crs=target).reset_index(drop=True)
    areas = metric_areas(out.geometry) if len(out) else np.zeros(0)
    per_input = []
    inp = allf["_input"].to_numpy()
    for k, (name, _) in enumerate(inputs):
        mine = inp == k
        dropped_k = Counter(str(r) for r in reason[mine] if r)
        per_input.append(
            {
                "file": name,
                "read": int(mine.sum()),
                "kept": int((mine & (reason == "")).sum()),
                "dropped": {r: int(dropped_k.get(r, 0)) for r in FUSE_DROP_REASONS},
            }
        )
    dropped = Counter(str(r) for r in reason if r)
    report: dict[str, Any] = {
        "inputs": per_input,
        "crs": out.crs.to_string() if out.crs is not None else None,
        "read": n,
        "kept": len(kept),
        "dropped": {r: int(dropped.get(r, 0)) for r in FUSE_DROP_REASONS},
        "trimmed": int(trimmed[kept].sum()),
        "classes": _class_rows(out["class_id"].tolist(), out["class_name"].astype(str).tolist(), areas.tolist()),
        "kept_area_m2": float(areas.sum()),
        "rules": {"overlap": OVERLAP_RULE, "duplicates": "same geometry and class: the highest priority copy kept"},
    }
    check_accounting(report, "fuse")
    for item in per_input:
        check_accounting(item, f"fuse input {item['file']}")
    return IngestResult(out, report)
