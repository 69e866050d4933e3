"""Import source: imagery the user already has, as EOPatches or GeoTIFF/COG files.

``source.path`` is a folder (relative to the config file; ``{season}`` is replaced
by the season id) holding either

* ``format: eopatch`` — one EOPatch (the folder has a ``bbox.geojson``) or a folder
  of EOPatches (its sub-folders with a ``bbox.geojson``), each with a band stack
  ``data/<bands_feature>`` (T, H, W, B) and optional data mask, cloud mask and cloud
  probability features; or
* ``format: geotiff`` — GeoTIFF/COG files matching ``file_pattern``, either one file
  per acquisition with all bands (``layout: per_date``; the date parsed from the file
  name with ``date_pattern`` or read from the TIFF tags ``TIFFTAG_DATETIME`` /
  ``ACQUISITION_DATE``) or one multi-band stack per file of ``len(dates) x
  len(band_names)`` bands (``layout: time_stack``; ``stack_order`` says whether the
  bands of one date are consecutive). Masks come from sibling files named
  ``<stem><suffix>.tif`` (one band per date of the image file).

For a tile and season, every source whose footprint intersects the tile is read,
its acquisitions within [start, end] kept, and each is reprojected onto the tile
grid with :func:`rasterio.warp.reproject` (bands with ``resampling``; masks always
nearest). Sources are mosaicked in sorted path order: the first source with data
at a pixel and date wins. Pixels no source covers get ``data_mask`` False and DN 0.
Acquisitions with no data pixel on the tile are dropped. If none is left, the
fetch raises a :class:`~lcms_tasks.errors.StageError` naming the tile, the path
and the season interval, unless ``allow_empty`` is set (then zero acquisitions
are returned and the tile's features are all no data).

Digital numbers are ``rint(value x reflectance_scale + dn_offset)`` clipped to
1..65535 where there is data (0 is no data), so reflectance = DN / 10000.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from lcms_tasks.bands import S2_BANDS, S2_QUANTIFICATION
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.grid import Tile
    from lcms_tasks.sources import SourceAcquisitions

log = logging.getLogger(__name__)

#: Source pixels read around the tile's footprint, so resampling kernels at the tile edge see their neighbours.
WINDOW_PAD_PX = 2

_TIFF_DATE_TAGS = ("ACQUISITION_DATE", "TIFFTAG_DATETIME", "DATETIME", "DATE")
_TIFF_DATE_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y%m%d")


class ImportSourceConfig(StrictModel):
    """Imagery the user already has: EOPatches or GeoTIFF/COG acquisitions."""

    type: Literal["import"] = Field("import", description="Import existing EOPatches or GeoTIFF/COG files.")
    format: Literal["eopatch", "geotiff"] = Field(
        "eopatch", description="'eopatch': a folder of EOPatches (or one EOPatch); 'geotiff': GeoTIFF/COG files."
    )
    path: str = Field(
        description="Folder of the EOPatch(es) or GeoTIFFs; relative to the config file; '{season}' is replaced "
        "by the season id."
    )
    band_names: tuple[str, ...] = Field(
        S2_BANDS,
        min_length=1,
        description="Names of the bands in the source order (EOPatch band axis, GeoTIFF bands without "
        "descriptions); these are the names stored downstream (features need B02, B03, B04, B08, B11, B12).",
    )
    reflectance_scale: float = Field(
        10000.0,
        gt=0,
        description="DN = value x reflectance_scale + dn_offset: 10000 for reflectance in 0..1, 1 for data "
        "already in digital numbers (reflectance x 10000).",
    )
    dn_offset: float = Field(
        0.0,
        description="Added after scaling (e.g. -1000 for Sentinel-2 L2A of processing baseline >= 04.00, "
        "whose DNs carry a +1000 offset).",
    )
    resampling: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="Resampling of band values onto the tile grid (masks always use nearest)."
    )
    cloud_probability_max: float = Field(
        1.0,
        gt=0,
        description="Source value meaning 100 % cloud probability: 1 for 0..1 floats, 255 for Sentinel Hub's "
        "uint8 CLP, 100 for percent.",
    )
    cloud_mask_values: list[int] | None = Field(
        None,
        description="Cloud-mask values meaning cloud (e.g. [3, 8, 9, 10] for an SCL layer); None: any non-zero "
        "value is cloud.",
    )
    allow_empty: bool = Field(
        False,
        description="A tile with no acquisition of the season holding data gets zero acquisitions (all no data) "
        "instead of an error.",
    )
    # -- EOPatch options
    bands_feature: str = Field("BANDS-S2-L1C", description="EOPatch: data feature holding the band stack.")
    data_mask_feature: str | None = Field(
        "IS_DATA", description="EOPatch: mask feature, non-zero = data (None: data where every band is finite)."
    )
    cloud_mask_feature: str | None = Field(
        "CLM", description="EOPatch: mask feature of clouds (None: no cloud mask, nothing is cloud)."
    )
    cloud_probability_feature: str | None = Field(
        "CLP",
        description="EOPatch: data feature of cloud probability (None or absent in the patch: 100 where the "
        "cloud mask says cloud, else 0).",
    )
    # -- GeoTIFF options
    file_pattern: str = Field("*.tif", description="GeoTIFF: glob of the image files inside `path`.")
    layout: Literal["per_date", "time_stack"] = Field(
        "per_date",
        description="GeoTIFF: 'per_date' = one file per acquisition with all bands; 'time_stack' = each file "
        "holds len(dates) x len(band_names) bands for the `dates` listed here.",
    )
    date_pattern: str | None = Field(
        None,
        description="GeoTIFF per_date: regex with a named group 'date' searched in the file name "
        r"(e.g. 'S2[AB]_(?P<date>\d{8})'); None: the date comes from the TIFF tags ACQUISITION_DATE or "
        "TIFFTAG_DATETIME.",
    )
    date_format: str = Field("%Y%m%d", description="GeoTIFF: strptime format of the 'date' group.")
    dates: list[dt.date] | None = Field(None, description="GeoTIFF time_stack: the acquisition dates, in stack order.")
    stack_order: Literal["date_major", "band_major"] = Field(
        "date_major",
        description="GeoTIFF time_stack: 'date_major' = the bands of the first date, then of the second, ...; "
        "'band_major' = the first band at every date, then the second band, ...",
    )
    data_mask_suffix: str | None = Field(
        None,
        description="GeoTIFF: mask file '<image stem><suffix>.tif' (non-zero = data, one band per date of the "
        "image); None: data where no band equals the file's nodata value (or `nodata`).",
    )
    cloud_mask_suffix: str | None = Field(
        None, description="GeoTIFF: cloud mask file '<image stem><suffix>.tif' (None: nothing is cloud)."
    )
    cloud_probability_suffix: str | None = Field(
        None,
        description="GeoTIFF: cloud probability file '<image stem><suffix>.tif' (scaled by cloud_probability_max).",
    )
    nodata: float | None = Field(
        0.0,
        description="GeoTIFF: value marking no data when the file declares none (a pixel is no data when every "
        "band equals it); None: every pixel of a file without a nodata value is data.",
    )

    @field_validator("band_names")
    @classmethod
    def _unique_bands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        dups = sorted({b for b in v if v.count(b) > 1})
        if dups:
            raise ValueError(f"band_names repeats {dups}")
        return v

    @field_validator("date_pattern")
    @classmethod
    def _date_group(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            compiled = re.compile(v)
        except re.error as err:
            raise ValueError(f"date_pattern {v!r} is not a valid regular expression: {err}") from err
        if "date" not in compiled.groupindex:
            raise ValueError(f"date_pattern {v!r} needs a named group 'date', e.g. (?P<date>\\d{{8}})")
        return v

    @model_validator(mode="after")
    def _layout(self) -> ImportSourceConfig:
        if self.format == "geotiff" and self.layout == "time_stack" and not self.dates:
            raise ValueError("layout 'time_stack' needs `dates` (the acquisition date of each stack slice)")
        if self.dates is not None and (self.format != "geotiff" or self.layout != "time_stack"):
            raise ValueError("`dates` is only for format 'geotiff' with layout 'time_stack'")
        return self


# -- pure helpers -----------------------------------------------------------------------------------


@dataclass
class SourceBlock:
    """One source's acquisitions in the season, reprojected onto a tile grid."""

    name: str
    dates: list[dt.date]
    values: np.ndarray  # (T, H, W, B) float32 source values (NaN where no data)
    data_mask: np.ndarray  # (T, H, W) bool
    cloud_mask: np.ndarray  # (T, H, W) bool
    cloud_probability: np.ndarray  # (T, H, W) float32 percent


def source_window(
    src_transform: Any, src_shape: tuple[int, int], src_crs: Any, tile: Tile, pad: int = WINDOW_PAD_PX
) -> tuple[slice, slice] | None:
    """Rows and columns of the source raster covering ``tile`` (padded), or None if they do not intersect."""
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = transform_bounds(tile.crs, src_crs, *tile.bounds, densify_pts=21)
    inverse = ~src_transform
    corners = [inverse * (x, y) for x in (x0, x1) for y in (y0, y1)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    h, w = src_shape
    r0, r1 = max(math.floor(min(rows)) - pad, 0), min(math.ceil(max(rows)) + pad, h)
    c0, c1 = max(math.floor(min(cols)) - pad, 0), min(math.ceil(max(cols)) + pad, w)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _warp(stack: np.ndarray, src_transform: Any, src_crs: Any, tile: Tile, resampling: str, fill: float) -> np.ndarray:
    """Reproject a (N, h, w) stack onto the tile grid; pixels the source does not cover get ``fill``."""
    from rasterio.warp import Resampling, reproject

    out = np.full((stack.shape[0], *tile.shape), fill, dtype=stack.dtype)
    if stack.shape[0] == 0:
        return out
    reproject(
        source=stack,
        destination=out,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=fill,
        dst_transform=tile.transform(),
        dst_crs=tile.crs,
        dst_nodata=fill,
        resampling=Resampling[resampling],
    )
    return out


def warp_block(
    name: str,
    dates: list[dt.date],
    values: np.ndarray,
    data_mask: np.ndarray,
    cloud_mask: np.ndarray,
    cloud_probability: np.ndarray,
    src_transform: Any,
    src_crs: Any,
    tile: Tile,
    resampling: Literal["bilinear", "nearest"],
) -> SourceBlock:
    """Reproject one source's (T, h, w, B) values and (T, h, w) masks onto ``tile``.

    Values of no-data source pixels are ignored by the resampling kernel; the data mask,
    cloud mask and cloud probability (percent) use nearest neighbour. A tile pixel has data
    when the nearest source pixel has data and every resampled band is finite.
    """
    t, h, w, b = values.shape
    vals = np.where(data_mask[..., None], values.astype(np.float32, copy=False), np.float32(np.nan))
    stack = np.ascontiguousarray(vals.transpose(0, 3, 1, 2).reshape(t * b, h, w))
    warped = _warp(stack, src_transform, src_crs, tile, resampling, np.nan)
    out_values = warped.reshape(t, b, *tile.shape).transpose(0, 2, 3, 1)
    masks = np.concatenate([data_mask, cloud_mask]).astype(np.uint8)
    warped_masks = _warp(masks, src_transform, src_crs, tile, "nearest", 0).astype(bool)
    data = warped_masks[:t] & np.isfinite(out_values).all(axis=-1)
    clp = _warp(cloud_probability.astype(np.float32), src_transform, src_crs, tile, "nearest", 0.0)
    return SourceBlock(
        name=name,
        dates=list(dates),
        values=out_values,
        data_mask=data,
        cloud_mask=warped_masks[t:] & data,
        cloud_probability=np.where(data, clp, np.float32(0.0)),
    )


def to_dn(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Digital numbers ``rint(value x scale + offset)`` as uint16, clipped to 1..65535 (0 stays for no data)."""
    dn = np.rint(values.astype(np.float64) * scale + offset)
    return np.clip(np.nan_to_num(dn, nan=0.0), 1, 65535).astype(np.uint16)


def mosaic_blocks(
    blocks: list[SourceBlock], shape: tuple[int, int], n_bands: int
) -> tuple[list[dt.date], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Blocks merged per date: (dates, values (T,H,W,B) float32 NaN = none, data, cloud, cloud probability).

    The first block with data at a pixel and date wins; dates where no block has data are dropped.
    """
    dates = sorted({d for b in blocks for d in b.dates})
    t = len(dates)
    values = np.full((t, *shape, n_bands), np.nan, np.float32)
    data = np.zeros((t, *shape), bool)
    cloud = np.zeros((t, *shape), bool)
    clp = np.zeros((t, *shape), np.float32)
    index = {d: i for i, d in enumerate(dates)}
    for block in blocks:
        for j, d in enumerate(block.dates):
            i = index[d]
            take = block.data_mask[j] & ~data[i]
            if not take.any():
                continue
            values[i][take] = block.values[j][take]
            cloud[i][take] = block.cloud_mask[j][take]
            clp[i][take] = block.cloud_probability[j][take]
            data[i] |= take
    keep = np.asarray(data.reshape(t, -1).any(axis=1), dtype=bool) if t else np.zeros(0, bool)
    return [d for d, k in zip(dates, keep.tolist(), strict=True) if k], values[keep], data[keep], cloud[keep], clp[keep]


def cloud_from_mask(mask: np.ndarray, values: list[int] | None) -> np.ndarray:
    """Cloud flags from a cloud-mask raster: any non-zero value, or membership in ``values``."""
    return np.isin(mask, values) if values is not None else mask != 0


def parse_tiff_date(tags: dict[str, str]) -> dt.date | None:
    """The acquisition date in GDAL metadata tags (ACQUISITION_DATE, TIFFTAG_DATETIME, ...), if any."""
    for key in _TIFF_DATE_TAGS:
        text = tags.get(key)
        if not text:
            continue
        text = text.strip().rstrip("Z")
        for fmt in _TIFF_DATE_FORMATS:
            try:
                return dt.datetime.strptime(text[: len(dt.datetime(2000, 1, 1).strftime(fmt))], fmt).date()
            except ValueError:
                continue
    return None


def _in_season(d: dt.date, start: dt.date, end: dt.date) -> bool:
    return start <= d <= end


# -- the source -------------------------------------------------------------------------------------


class ImportSource:
    """Acquisitions read from EOPatches or GeoTIFFs on disk and resampled onto the project's tiles."""

    def __init__(self, config: ProjectConfig) -> None:
        src = config.source
        if not isinstance(src, ImportSourceConfig):
            raise TypeError(f"ImportSource needs an import source config, got {src.type!r}")
        self.project = config
        self.options = src

    def root(self, season_id: str) -> Path:
        """The source folder of ``season_id``."""
        return self.project.resolve_path(self.options.path.replace("{season}", season_id))

    def fetch(self, tile: Tile, season_id: str, start: dt.date, end: dt.date) -> SourceAcquisitions:
        """The tile's acquisitions between ``start`` and ``end`` (inclusive), mosaicked from every source."""
        from lcms_tasks.errors import ConfigError, StageError
        from lcms_tasks.sources import SourceAcquisitions

        opts = self.options
        root = self.root(season_id)
        if not root.is_dir():
            raise ConfigError(f"import source folder {root} (season {season_id}) does not exist", field="source.path")
        if opts.format == "eopatch":
            paths = self.eopatch_paths(root)
            blocks = [b for p in paths if (b := self.read_eopatch(p, tile, start, end)) is not None]
        else:
            paths = self.geotiff_paths(root)
            blocks = [b for p in paths if (b := self.read_geotiff(p, tile, start, end)) is not None]
        if not paths:
            what = "EOPatch (a folder with bbox.geojson)" if opts.format == "eopatch" else f"file {opts.file_pattern!r}"
            raise ConfigError(f"import source folder {root} holds no {what}", field="source.path")
        n_bands = len(opts.band_names)
        dates, values, data, cloud, clp = mosaic_blocks(blocks, tile.shape, n_bands)
        if not dates:
            message = (
                f"tile {tile.id}: no acquisition between {start} and {end} with data on the tile in {root} "
                f"({len(paths)} source(s), {len(blocks)} intersecting the tile)"
            )
            if not opts.allow_empty:
                raise StageError(message + "; set source.allow_empty to accept tiles without imagery")
            log.warning("%s; returning no acquisitions", message)
        bands = to_dn(values, opts.reflectance_scale, opts.dn_offset)
        bands[~data] = 0
        percent = np.clip(np.rint(clp), 0, 100).astype(np.uint8)
        log.info(
            "import %s: %d acquisition(s) from %d of %d source(s) in %s",
            tile.id,
            len(dates),
            len(blocks),
            len(paths),
            root,
        )
        return SourceAcquisitions(
            dates=dates,
            bands=bands,
            data_mask=data,
            cloud_mask=cloud,
            cloud_probability=percent,
            band_names=tuple(opts.band_names),
            quantification=S2_QUANTIFICATION,
            source_name=f"import:{opts.format}",
        )

    # -- EOPatches

    @staticmethod
    def eopatch_paths(root: Path) -> list[Path]:
        """``root`` if it is an EOPatch, else its sub-folders that are EOPatches (sorted)."""
        if (root / "bbox.geojson").is_file():
            return [root]
        return sorted(p for p in root.iterdir() if p.is_dir() and (p / "bbox.geojson").is_file())

    def read_eopatch(self, path: Path, tile: Tile, start: dt.date, end: dt.date) -> SourceBlock | None:
        """The EOPatch's season acquisitions on the tile grid (None if it misses the tile or the season)."""
        from affine import Affine
        from eolearn.core import EOPatch
        from rasterio.crs import CRS

        from lcms_tasks.errors import StageError

        opts = self.options
        try:
            patch = EOPatch.load(str(path), lazy_loading=True)
        except (OSError, ValueError) as err:
            raise StageError(f"cannot read EOPatch {path}: {err}") from err
        if patch.bbox is None or not patch.timestamps:
            raise StageError(f"EOPatch {path} has no bbox or no timestamps")
        if opts.bands_feature not in patch.data:
            raise StageError(
                f"EOPatch {path} has no data/{opts.bands_feature} (data features: {sorted(patch.data.keys())}); "
                "set source.bands_feature"
            )
        src_crs = CRS.from_epsg(patch.bbox.crs.epsg)
        dates = [t.date() for t in patch.timestamps]
        keep = np.array([_in_season(d, start, end) for d in dates])
        if not keep.any():
            return None
        bbox = patch.bbox
        # The band stack's shape fixes the pixel size; the bbox may not be a whole number of 10 m pixels.
        values = patch.data[opts.bands_feature]
        _, h, w, b = values.shape
        if b != len(opts.band_names):
            raise StageError(
                f"EOPatch {path}: data/{opts.bands_feature} has {b} bands but source.band_names lists "
                f"{len(opts.band_names)}"
            )
        transform = Affine(
            (bbox.max_x - bbox.min_x) / w, 0.0, bbox.min_x, 0.0, -(bbox.max_y - bbox.min_y) / h, bbox.max_y
        )
        window = source_window(transform, (h, w), src_crs, tile)
        if window is None:
            return None
        rows, cols = window
        idx = np.flatnonzero(keep)

        def crop(array: np.ndarray) -> np.ndarray:
            return np.asarray(array[idx][:, rows, cols])

        def mask_feature(name: str | None, kind: str) -> np.ndarray | None:
            if name is None:
                return None
            if name not in patch.mask:
                raise StageError(
                    f"EOPatch {path} has no mask/{name} (mask features: {sorted(patch.mask.keys())}); "
                    f"set source.{kind} (or null)"
                )
            return crop(patch.mask[name])[..., 0]

        vals = crop(values)
        data_raw = mask_feature(opts.data_mask_feature, "data_mask_feature")
        data = data_raw != 0 if data_raw is not None else np.isfinite(vals).all(axis=-1)
        cloud_raw = mask_feature(opts.cloud_mask_feature, "cloud_mask_feature")
        cloud = cloud_from_mask(cloud_raw, opts.cloud_mask_values) if cloud_raw is not None else np.zeros_like(data)
        name = opts.cloud_probability_feature
        if name is not None and name in patch.data:
            clp = crop(patch.data[name])[..., 0].astype(np.float32) * np.float32(100.0 / opts.cloud_probability_max)
        else:
            clp = cloud.astype(np.float32) * np.float32(100.0)
        row_off, col_off = rows.start, cols.start
        return warp_block(
            str(path),
            [dates[i] for i in idx],
            vals,
            data,
            cloud,
            clp,
            transform * Affine.translation(col_off, row_off),
            src_crs,
            tile,
            opts.resampling,
        )

    # -- GeoTIFFs

    def geotiff_paths(self, root: Path) -> list[Path]:
        """Image files matching ``file_pattern`` (mask files, by their suffixes, excluded), sorted."""
        suffixes = [
            s
            for s in (
                self.options.data_mask_suffix,
                self.options.cloud_mask_suffix,
                self.options.cloud_probability_suffix,
            )
            if s
        ]
        return sorted(
            p
            for p in root.glob(self.options.file_pattern)
            if p.is_file() and not any(p.stem.endswith(s) for s in suffixes)
        )

    def geotiff_dates(self, path: Path, tags: dict[str, str], n_slices: int) -> list[dt.date]:
        """The acquisition date(s) of an image file (``StageError`` naming the file if unknown)."""
        from lcms_tasks.errors import StageError

        opts = self.options
        if opts.layout == "time_stack":
            dates = list(opts.dates or [])
            if len(dates) != n_slices:
                raise StageError(f"{path}: holds {n_slices} date slice(s) but source.dates lists {len(dates)}")
            return dates
        if opts.date_pattern is not None:
            match = re.search(opts.date_pattern, path.name)
            if match is None:
                raise StageError(f"{path}: file name does not match source.date_pattern {opts.date_pattern!r}")
            try:
                return [dt.datetime.strptime(match.group("date"), opts.date_format).date()]
            except ValueError as err:
                raise StageError(
                    f"{path}: date {match.group('date')!r} does not parse with {opts.date_format!r}"
                ) from err
        found = parse_tiff_date(tags)
        if found is None:
            raise StageError(
                f"{path}: no acquisition date (no TIFF tag {' / '.join(_TIFF_DATE_TAGS)}); set source.date_pattern"
            )
        return [found]

    def _band_order(self, path: Path, count: int, descriptions: tuple[str | None, ...]) -> list[int]:
        """1-based band indexes of the file in ``band_names`` order (per date slice for time stacks)."""
        from lcms_tasks.errors import StageError

        names = list(self.options.band_names)
        if self.options.layout == "per_date":
            if all(descriptions) and len(descriptions) == count:
                by_name = {str(d): i + 1 for i, d in enumerate(descriptions)}
                missing = [n for n in names if n not in by_name]
                if missing:
                    raise StageError(f"{path}: no band described as {missing} (band descriptions: {list(by_name)})")
                return [by_name[n] for n in names]
            if count != len(names):
                raise StageError(
                    f"{path}: {count} band(s) without descriptions, but source.band_names lists {len(names)}"
                )
            return list(range(1, count + 1))
        n_dates = len(self.options.dates or [])
        if count != n_dates * len(names):
            raise StageError(
                f"{path}: {count} band(s); a time stack of {n_dates} date(s) x {len(names)} band(s) needs "
                f"{n_dates * len(names)}"
            )
        if self.options.stack_order == "date_major":
            return [t * len(names) + b + 1 for t in range(n_dates) for b in range(len(names))]
        return [b * n_dates + t + 1 for t in range(n_dates) for b in range(len(names))]

    def _companion(self, path: Path, suffix: str | None) -> Path | None:
        from lcms_tasks.errors import StageError

        if suffix is None:
            return None
        companion = path.with_name(f"{path.stem}{suffix}{path.suffix}")
        if not companion.is_file():
            raise StageError(f"{path}: mask file {companion.name} (suffix {suffix!r}) is missing")
        return companion

    def read_geotiff(self, path: Path, tile: Tile, start: dt.date, end: dt.date) -> SourceBlock | None:
        """The file's season acquisitions on the tile grid (None if it misses the tile or the season)."""
        import rasterio
        from rasterio.windows import Window

        from lcms_tasks.errors import StageError

        opts = self.options
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise StageError(f"cannot read GeoTIFF {path}: {err}") from err
        with ds:
            if ds.crs is None:
                raise StageError(f"{path}: GeoTIFF without a CRS")
            n_slices = ds.count // len(opts.band_names) if opts.layout == "time_stack" else 1
            order = self._band_order(path, ds.count, tuple(ds.descriptions))
            dates = self.geotiff_dates(path, ds.tags(), n_slices)
            keep = [i for i, d in enumerate(dates) if _in_season(d, start, end)]
            if not keep:
                return None
            window = source_window(ds.transform, (ds.height, ds.width), ds.crs, tile)
            if window is None:
                return None
            rows, cols = window
            win = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            n_b = len(opts.band_names)
            wanted = [order[t * n_b + b] for t in keep for b in range(n_b)]
            raw = ds.read(wanted, window=win).astype(np.float32)
            h, w = raw.shape[1:]
            vals = raw.reshape(len(keep), n_b, h, w).transpose(0, 2, 3, 1)
            nodata = ds.nodata if ds.nodata is not None else opts.nodata
            transform = ds.window_transform(win)
            src_crs = ds.crs
            grid = (ds.height, ds.width, ds.transform)
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            data = ~(vals == np.float32(nodata)).all(axis=-1)
        else:
            data = np.isfinite(vals).all(axis=-1)
        data_file = self._companion(path, opts.data_mask_suffix)
        if data_file is not None:
            data &= self._read_mask(data_file, win, keep, n_slices, grid) != 0
        cloud_file = self._companion(path, opts.cloud_mask_suffix)
        cloud = (
            cloud_from_mask(self._read_mask(cloud_file, win, keep, n_slices, grid), opts.cloud_mask_values)
            if cloud_file is not None
            else np.zeros_like(data)
        )
        clp_file = self._companion(path, opts.cloud_probability_suffix)
        if clp_file is not None:
            clp = self._read_mask(clp_file, win, keep, n_slices, grid).astype(np.float32) * np.float32(
                100.0 / opts.cloud_probability_max
            )
        else:
            clp = cloud.astype(np.float32) * np.float32(100.0)
        return warp_block(
            str(path), [dates[i] for i in keep], vals, data, cloud, clp, transform, src_crs, tile, opts.resampling
        )

    @staticmethod
    def _read_mask(path: Path, window: Any, keep: list[int], n_slices: int, grid: tuple[int, int, Any]) -> np.ndarray:
        """A mask file's slices ``keep`` over ``window`` as (T, h, w); it must share the image's grid."""
        import rasterio

        from lcms_tasks.errors import StageError

        with rasterio.open(path) as ds:
            if (ds.height, ds.width) != grid[:2] or not ds.transform.almost_equals(grid[2]):
                raise StageError(
                    f"{path}: mask grid {ds.height}x{ds.width} {tuple(ds.transform)[:6]} differs from its image's "
                    f"{grid[0]}x{grid[1]} {tuple(grid[2])[:6]}"
                )
            if ds.count != n_slices:
                raise StageError(f"{path}: {ds.count} band(s); expected one per date slice of the image ({n_slices})")
            return np.asarray(ds.read([i + 1 for i in keep], window=window))
