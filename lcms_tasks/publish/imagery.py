"""Satellite imagery of a published season, as COGs the map viewer shows beside the maps.

Per tile and season (:func:`write_tile_imagery`, called by the publish stage's ``run``) it reads the
download EOPatch (``data/BANDS`` uint16 digital numbers, ``mask/IS_DATA``, ``mask/IS_VALID``, the
timestamps) and writes, complete or absent, a folder of its own beside the BYOC folder::

    <root>/<project>/<season>/imagery/<tile>/composite.tiff          cloud-free composite of the season
    <root>/<project>/<season>/imagery/<tile>/dates/<YYYY-MM-DD>.tiff  one per acquisition date
    <root>/<project>/<season>/imagery/<tile>/_COMPLETE.json           the marker: bands, dates, footprint

Every file holds the 4 bands of :data:`IMAGERY_BANDS` (B02, B03, B04, B08: blue, green, red, NIR) as
uint16 digital numbers (the download's quantification, 10000 = reflectance 1), no-data 0, DEFLATE (or
ZSTD) with the horizontal predictor, 512 px internal tiles, AVERAGE overviews (rio-cogeo). True colour
is bands 3, 2, 1; false colour (NIR, red, green) bands 4, 3, 2.

* The **composite** is, per pixel and band, the median of the valid observations of the season
  (``IS_VALID``: data, not cloud, cloud edges dilated), rounded half up; 0 where a pixel has none
  (:func:`median_composite`).
* A **date** image is what was acquired that day where there is data (``IS_DATA``), clouds
  included — the operator picks a clear date or sees why one is not; acquisitions of the same day
  are merged (first one with data wins). Dates without any data over the tile are left out.
  A real digital number of 0 inside the data becomes 1, so 0 only ever means no data.

Memory: the band cube is read one date at a time; the 4 bands and the valid mask of each date are
appended to a scratch file in the staging folder (``(T, H, W, 4)`` uint16, a third of the 13-band cube), from
which the composite is computed block of rows by block of rows. The stage holds one date plus one
block whatever the tile size and season length. (Writing the date COGs from threads gains ~15 %:
rio-cogeo holds the GIL for most of a write.)

Per season (:func:`write_season_index`, from the publish stage's ``finalize``) the dates of every
tile with imagery go to ``<season>/imagery/_run/index/dates.json`` (date -> tiles), which also
lists the published tiles that have no imagery and why.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lcms_tasks.errors import ArtefactMissingError, CorruptArtefactError

if TYPE_CHECKING:
    from affine import Affine

    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.storage import Storage

log = logging.getLogger(__name__)

#: Storage folder of the imagery, beside the stages' folders: ``<root>/<project>/<season>/imagery/<tile>/``.
NAME = "imagery"
#: The bands of every imagery COG, in file order (band 1 = B02 ... band 4 = B08).
IMAGERY_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")
#: The season's cloud-free composite, and the id the API gives it among the dates.
COMPOSITE = "composite"
COMPOSITE_FILE = "composite.tiff"
#: Folder of the per-date COGs inside a tile folder.
DATES_FOLDER = "dates"
#: Internal tile side (px) of the imagery COGs.
BLOCK_SIZE = 512
#: No-data value of the imagery COGs (the Sentinel-2 no-data digital number).
NODATA = 0
#: Rows of a composite block are chosen so that one block of the (T, rows, W, 4) stack is about this big.
_BLOCK_BYTES = 8 * 2**20
_SENTINEL = np.iinfo(np.uint16).max

Compression = Literal["DEFLATE", "ZSTD"]


def date_file(date: str) -> str:
    """Path, inside a tile folder, of the COG of acquisition ``date`` (``YYYY-MM-DD``)."""
    return f"{DATES_FOLDER}/{date}.tiff"


# -- pure array functions ----------------------------------------------------------------------------


def _median_block(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, P, B) uint16 and (T, P) bool -> (P, B) uint16 median of the valid observations (0 if none)."""
    count = np.count_nonzero(valid, axis=0)  # (P,)
    # Invalid observations sort last (as the largest uint16), so the valid ones are the first `count`.
    stack = np.where(valid[..., None], values, np.uint16(_SENTINEL))
    stack.sort(axis=0)
    lo = np.maximum((count - 1) // 2, 0)
    hi = count // 2
    bands = values.shape[-1]
    low = np.take_along_axis(stack, np.broadcast_to(lo[None, :, None], (1, lo.size, bands)), axis=0)[0]
    high = np.take_along_axis(stack, np.broadcast_to(hi[None, :, None], (1, hi.size, bands)), axis=0)[0]
    median = ((low.astype(np.uint32) + high + 1) // 2).astype(np.uint16)  # the mean of the middle two, half up
    median[count == 0] = 0
    return median


def median_composite(bands: Any, valid: Any, *, chunk_rows: int | None = None) -> np.ndarray:
    """Per-pixel, per-band median of the valid observations: ``(T, H, W, B)`` uint16 -> ``(H, W, B)`` uint16.

    ``bands`` and ``valid`` (``(T, H, W)`` bool, ``(T, H, W, 1)`` accepted) may be arrays or memory maps;
    they are read one block of rows at a time. For an even number of valid observations the median is
    the mean of the middle two, rounded half up. Pixels without a valid observation are 0.
    """
    t, h, w, b = bands.shape
    valid_shape = tuple(valid.shape[:3])
    if valid_shape != (t, h, w) or (len(valid.shape) == 4 and valid.shape[3] != 1):
        raise ValueError(f"valid {tuple(valid.shape)} does not match bands {tuple(bands.shape)} (T, H, W[, 1])")
    if np.dtype(bands.dtype) != np.uint16:
        raise ValueError(f"the composite is made of uint16 digital numbers, got {bands.dtype}")
    out = np.zeros((h, w, b), dtype=np.uint16)
    if t == 0 or h == 0 or w == 0:
        return out
    rows = chunk_rows or max(1, _BLOCK_BYTES // max(1, t * w * b * 2))
    for r0 in range(0, h, rows):
        r1 = min(r0 + rows, h)
        block = np.asarray(bands[:, r0:r1]).reshape(t, -1, b)
        mask = np.asarray(valid[:, r0:r1], dtype=bool).reshape(t, -1)
        out[r0:r1] = _median_block(block, mask).reshape(r1 - r0, w, b)
    return out


def date_groups(timestamps: Sequence[dt.date | dt.datetime]) -> list[tuple[str, list[int]]]:
    """The acquisition dates (``YYYY-MM-DD``, in time order) and the indices of the timestamps of each day."""
    groups: dict[str, list[int]] = {}
    for i, stamp in sorted(enumerate(timestamps), key=lambda item: (item[1].isoformat(), item[0])):
        day = stamp.date() if isinstance(stamp, dt.datetime) else stamp
        groups.setdefault(day.isoformat(), []).append(i)
    return list(groups.items())


def as_image(values: np.ndarray, data: np.ndarray) -> np.ndarray:
    """``values`` (H, W, B) uint16 where ``data`` (H, W), 0 elsewhere; a digital number 0 in the data becomes 1."""
    return np.where(data[..., None], np.maximum(values, 1), 0).astype(np.uint16)


# -- writing -----------------------------------------------------------------------------------------


def overview_levels(width: int, height: int, block: int = BLOCK_SIZE) -> int:
    """2x overviews down to one block (none for an image of one block)."""
    levels = 0
    while max(width, height) / 2**levels > block:
        levels += 1
    return levels


def write_imagery_cog(
    image: np.ndarray,
    path: Path,
    *,
    crs: Any,
    transform: Affine,
    band_names: Sequence[str] = IMAGERY_BANDS,
    compression: Compression = "DEFLATE",
    tags: Mapping[str, str] | None = None,
) -> Path:
    """Write ``image`` ((H, W, B) uint16, 0 = no data) as a B-band COG at ``path`` (see the module docstring)."""
    import rasterio
    from rasterio.io import MemoryFile
    from rio_cogeo.cogeo import cog_translate

    data = np.asarray(image)
    if data.ndim != 3 or data.shape[-1] != len(band_names):
        raise ValueError(f"{path}: an imagery COG is (H, W, {len(band_names)}), got shape {data.shape}")
    if data.dtype != np.uint16:
        raise ValueError(f"{path}: imagery is uint16 digital numbers, got {data.dtype}")
    height, width, count = data.shape
    source_profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": "uint16",
        "crs": rasterio.crs.CRS.from_user_input(crs),
        "transform": transform,
        "nodata": NODATA,
    }
    dst_profile = {
        "driver": "GTiff",
        "interleave": "pixel",
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "compress": compression,
        "predictor": 2,
        "photometric": "MINISBLACK",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with MemoryFile() as memfile:
        with memfile.open(**source_profile) as mem:
            mem.write(np.moveaxis(data, -1, 0))
            for i, name in enumerate(band_names, start=1):
                mem.set_band_description(i, name)
            if tags:
                mem.update_tags(**tags)
        with memfile.open() as src:
            cog_translate(
                src,
                str(path),
                dst_profile,
                nodata=NODATA,
                overview_level=overview_levels(width, height),
                overview_resampling="average",
                in_memory=True,
                config={"GDAL_TIFF_OVR_BLOCKSIZE": str(BLOCK_SIZE)},
                quiet=True,
            )
    return path


def read_timestamps(folder: Path, where: str) -> list[dt.datetime]:
    """The timestamps of the EOPatch in local ``folder`` (``timestamps.json``, or gzipped)."""
    plain, packed = folder / "timestamps.json", folder / "timestamps.json.gz"
    try:
        if plain.is_file():
            raw = json.loads(plain.read_text())
        elif packed.is_file():
            with gzip.open(packed, "rt") as fh:
                raw = json.load(fh)
        else:
            raise ArtefactMissingError(f"{where}: the EOPatch has no timestamps (timestamps.json)")
        return [dt.datetime.fromisoformat(str(s)) for s in raw]
    except (ValueError, TypeError, OSError) as err:
        raise CorruptArtefactError(f"{where}/timestamps.json: cannot be read as timestamps: {err}") from err


def _reader(folder: Path, feature: str, where: str) -> Any | None:
    """A by-rows reader of the 4-D array ``feature`` (loaded whole when stored gzipped); None if absent."""
    from lcms_tasks.eopatch import StoredArray, check_npy_gz

    npy = folder / f"{feature}.npy"
    if npy.is_file():
        return StoredArray(npy, where=where, file=f"{feature}.npy")
    packed = folder / f"{feature}.npy.gz"
    if packed.is_file():
        check_npy_gz(packed, where, f"{feature}.npy.gz")
        with gzip.open(packed, "rb") as fh:
            return np.load(fh, allow_pickle=False)
    return None


@dataclass
class TileImagery:
    """What :func:`write_tile_imagery` did for one tile: the folder written, or why there is none."""

    tile_id: str
    uri: str | None
    dates: list[str] = field(default_factory=list)
    skipped: str | None = None


def write_tile_imagery(
    tile: Tile,
    ctx: RunContext,
    *,
    footprint_wgs84: Mapping[str, Any],
    compression: Compression = "DEFLATE",
) -> TileImagery:
    """Write the imagery folder of ``tile`` for ``ctx.season`` from its download EOPatch, complete or absent.

    No imagery (``skipped`` says why, and nothing is written) when the tile has no download or the
    download lacks one of :data:`IMAGERY_BANDS`. A download that is there but cannot be read is an
    error (``CorruptArtefactError``).
    """
    from lcms_tasks.eopatch import NpyAppender, StoredArray

    t0 = time.perf_counter()
    storage = ctx.storage
    src_uri = ctx.tile_uri("download", tile.id)
    uri = ctx.tile_uri(NAME, tile.id)
    if not storage.is_complete(src_uri):
        reason = f"no download of the tile ({src_uri} is absent or incomplete)"
        log.warning("publish %s: no imagery: %s", tile.id, reason)
        return TileImagery(tile.id, None, skipped=reason)
    src_meta = storage.read_marker(src_uri)
    band_names = [str(b) for b in src_meta.get("band_names", [])]
    missing = [b for b in IMAGERY_BANDS if b not in band_names]
    if missing:
        reason = f"the download {src_uri} has no band(s) {', '.join(missing)} (it has {', '.join(band_names)})"
        log.warning("publish %s: no imagery: %s", tile.id, reason)
        return TileImagery(tile.id, None, skipped=reason)
    picks = [band_names.index(b) for b in IMAGERY_BANDS]
    height, width = tile.shape
    transform = tile.transform()
    meta: dict[str, Any] = {
        "kind": "imagery",
        "epsg": tile.epsg,
        "bounds": list(tile.bounds),
        "shape": [height, width],
        "resolution": tile.resolution,
        "transform": [transform.a, transform.b, transform.c, transform.d, transform.e, transform.f],
        "footprint_wgs84": dict(footprint_wgs84),
        "bands": list(IMAGERY_BANDS),
        "dtype": "uint16",
        "nodata": NODATA,
        "quantification": float(src_meta.get("quantification", 10000.0)),
        "block_size": BLOCK_SIZE,
        "compression": compression,
        "overview_resampling": "AVERAGE",
        "source": src_meta.get("source"),
        "upstream": src_meta.get("run_id"),
    }
    marker = ctx.marker_meta("publish", tile.id, meta)
    with storage.reading_dir(src_uri) as folder, storage.writing_dir(uri, marker) as staging:
        timestamps = read_timestamps(folder, src_uri)
        bands = _reader(folder, "data/BANDS", src_uri)
        valid = _reader(folder, "mask/IS_VALID", src_uri)
        data = _reader(folder, "mask/IS_DATA", src_uri)
        if bands is None or valid is None:
            raise CorruptArtefactError(f"{src_uri}: a complete download without data/BANDS or mask/IS_VALID")
        if data is None:  # an older download: where an observation is valid, it has data
            data = valid
        n = len(timestamps)
        for name, array in (("data/BANDS", bands), ("mask/IS_VALID", valid), ("mask/IS_DATA", data)):
            if tuple(array.shape[:3]) != (n, height, width):
                raise CorruptArtefactError(
                    f"{src_uri}/{name}: shape {tuple(array.shape)}, expected ({n}, {height}, {width}, ...) for "
                    f"{n} timestamps on tile {tile.id}"
                )
        scratch = staging / ".scratch"  # removed before the folder is published
        scratch.mkdir()
        # Plain appended files, read back by blocks of rows (no memory map: its pages would count as the
        # process's memory until written back).
        stack = NpyAppender(scratch / "stack.npy", (height, width, len(picks)), np.uint16)
        usable = NpyAppender(scratch / "valid.npy", (height, width, 1), bool)
        observed = np.zeros((height, width), dtype=np.uint16)
        try:
            dates: list[dict[str, Any]] = []
            for day, indices in date_groups(timestamps):
                image = np.zeros((height, width, len(picks)), dtype=np.uint16)
                covered = np.zeros((height, width), dtype=bool)
                clear = np.zeros((height, width), dtype=bool)
                for i in indices:
                    values = np.asarray(bands[[i], 0:height])[0][..., picks]
                    has_data = np.asarray(data[[i], 0:height], dtype=bool)[0, ..., 0]
                    is_valid = np.asarray(valid[[i], 0:height], dtype=bool)[0, ..., 0] & has_data
                    stack.append(values)
                    usable.append(is_valid[..., None])
                    observed += is_valid
                    fill = has_data & ~covered
                    image[fill] = values[fill]
                    covered |= has_data
                    clear |= is_valid
                if not covered.any():
                    continue
                file = date_file(day)
                write_imagery_cog(
                    as_image(image, covered),
                    staging / file,
                    crs=tile.crs,
                    transform=transform,
                    compression=compression,
                    tags={"DATE": day, "ACQUISITIONS": str(len(indices))},
                )
                dates.append(
                    {
                        "date": day,
                        "file": file,
                        "acquisitions": len(indices),
                        "data_fraction": round(float(covered.mean()), 4),
                        "valid_fraction": round(float(clear.mean()), 4),
                    }
                )
            stack.close()
            usable.close()
            if stack.count:
                composite = median_composite(StoredArray(stack.path), StoredArray(usable.path))
            else:
                composite = np.zeros((height, width, len(picks)), dtype=np.uint16)
        finally:
            stack.discard()
            usable.discard()
            shutil.rmtree(scratch, ignore_errors=True)
        write_imagery_cog(
            as_image(composite, observed > 0),
            staging / COMPOSITE_FILE,
            crs=tile.crs,
            transform=transform,
            compression=compression,
            tags={"COMPOSITE": "per-pixel median of the valid observations of the season"},
        )
        meta["composite"] = {
            "file": COMPOSITE_FILE,
            "method": "per-pixel, per-band median of the valid observations (IS_VALID) of the season",
            "valid_fraction": round(float((observed > 0).mean()), 4),
            "mean_observations": round(float(observed.mean()), 2),
        }
        meta["dates"] = dates
        meta["n_dates"] = len(dates)
        meta["seconds"] = round(time.perf_counter() - t0, 3)
        marker.update(meta)  # written last, when the block ends
    log.info("publish %s: imagery composite + %d date(s) in %.2f s", tile.id, len(dates), meta["seconds"])
    return TileImagery(tile.id, uri, dates=[d["date"] for d in dates])


# -- reading back ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageryTile:
    """A tile folder of imagery, read back from its marker: where it is, where it lies, which dates it has."""

    tile_id: str
    season: str
    uri: str
    epsg: int
    bounds: tuple[float, float, float, float]
    footprint_wgs84: dict[str, Any]
    dates: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def file_uri(self, date: str) -> str:
        """URI of the COG of ``date`` (``YYYY-MM-DD``) or of :data:`COMPOSITE`."""
        return f"{self.uri}/{COMPOSITE_FILE if date == COMPOSITE else date_file(date)}"

    @classmethod
    def from_marker(cls, uri: str, marker: Mapping[str, Any]) -> ImageryTile:
        try:
            bounds = tuple(float(v) for v in marker["bounds"])
            if len(bounds) != 4:
                raise ValueError(f"bounds has {len(bounds)} values, not 4")
            return cls(
                tile_id=str(marker["tile"]),
                season=str(marker["season"]),
                uri=uri,
                epsg=int(marker["epsg"]),
                bounds=(bounds[0], bounds[1], bounds[2], bounds[3]),
                footprint_wgs84=dict(marker["footprint_wgs84"]),
                dates=tuple(str(d["date"]) for d in marker["dates"]),
                meta=dict(marker),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptArtefactError(f"{uri}: the imagery marker does not describe an imagery tile ({err})") from err


def imagery_tiles(storage: Storage, project: str, season: str) -> Iterator[ImageryTile]:
    """Every complete imagery tile folder of ``season`` (in tile id order)."""
    stage = storage.stage_uri(project, season, NAME)
    for tile_id in sorted(storage.complete_children(stage)):
        uri = storage.tile_uri(project, season, NAME, tile_id)
        yield ImageryTile.from_marker(uri, storage.read_marker(uri))


def write_season_index(ctx: RunContext, published: Sequence[str]) -> dict[str, Any]:
    """The season's date index (``<season>/imagery/_run/index/dates.json``) and what it covers.

    ``published``: the tile ids published in the season; those without imagery are listed with the
    reason a tile is usually without it.
    """
    tiles = list(imagery_tiles(ctx.storage, ctx.config.project, ctx.season))
    by_date: dict[str, list[str]] = {}
    for t in tiles:
        for day in t.dates:
            by_date.setdefault(day, []).append(t.tile_id)
    have = {t.tile_id for t in tiles}
    without = [tile_id for tile_id in published if tile_id not in have]
    index = {
        "season": ctx.season,
        "bands": list(IMAGERY_BANDS),
        "composite": COMPOSITE_FILE,
        "tile_path": f"{ctx.config.project}/{ctx.season}/{NAME}/<tile>/",
        "tiles": sorted(have),
        "dates": [{"date": day, "tiles": sorted(ids)} for day, ids in sorted(by_date.items())],
        "tiles_without_imagery": without,
    }
    uri = ctx.run_uri(NAME, "index")
    with ctx.storage.writing_dir(uri, ctx.marker_meta("publish", None, {"kind": "imagery_index"})) as staging:
        (staging / "dates.json").write_text(json.dumps(index, indent=2))
    if without:
        log.warning(
            "publish season %s: %d published tile(s) without imagery (e.g. %s): their download is missing or "
            "lacks %s (see the publish log of the tile)",
            ctx.season,
            len(without),
            without[0],
            "/".join(IMAGERY_BANDS),
        )
    return {
        "uri": uri,
        "tiles": len(have),
        "dates": len(by_date),
        "tiles_without_imagery": without,
        "layout": f"{ctx.config.project}/{ctx.season}/{NAME}/<tile>/{{{COMPOSITE_FILE},{DATES_FOLDER}/<date>.tiff}}",
    }
