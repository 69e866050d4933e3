"""Cloud Optimized GeoTIFFs that Sentinel Hub "Bring Your Own COG" (BYOC) accepts: writing and checking.

:func:`write_cog` turns one (H, W) uint8 array into a single-band COG with rio-cogeo's
``cog_translate`` (from an in-memory GeoTIFF; GDAL lays the file out, nothing here writes TIFF
structure by hand): DEFLATE (or ZSTD) compression, 1024 px internal tiles on the full-resolution
image *and* on every overview (``GDAL_TIFF_OVR_BLOCKSIZE``), overviews halving down to one tile,
photometric MINISBLACK, no palette (colours travel separately: :mod:`lcms_tasks.publish.mosaic`),
the no-data value declared. The overview resampling is always given explicitly — MODE for
categorical bands (class ids, transition codes), AVERAGE for the confidence — never GDAL's default;
rio-cogeo records it in the file's ``OVERVIEW_RESAMPLING`` tag.

:func:`check_byoc` verifies a written file against those rules and BYOC's own constraints (see
https://docs.sentinel-hub.com/api/latest/api/byoc/, "Constraints and settings"): rio-cogeo's
``cog_validate(strict=True)``; photometric 1 and no colour map; header (ghost area and IFDs, i.e.
everything before the first tile's data) under 1 MB; a CRS BYOC accepts (WGS84 EPSG:4326,
WebMercator EPSG:3857, a WGS84 UTM zone EPSG:32601-32660 / 32701-32760, Europe LAEA EPSG:3035); one
band of 8-bit unsigned integers; the same tile size on every level; overviews down to one tile;
the expected no-data value and overview resampling for the known bands. :func:`check_tile_folders`
adds the rules that span tile folders: the same file names in every folder and one bit depth per
band. Each problem is one line ``<file>: <rule>: <what is wrong>``; :class:`CogCheckError` carries
them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lcms_tasks.errors import StageError

if TYPE_CHECKING:
    from affine import Affine

log = logging.getLogger(__name__)

#: Internal tile side (px) of every level of every published COG.
TILE_SIZE = 1024
#: BYOC's limit on a COG's header: everything before the first block of image data.
HEADER_LIMIT_BYTES = 1024 * 1024
#: cog_validate recommends overviews for images wider or taller than this (its warning is an error in strict mode).
COG_VALIDATE_OVERVIEW_PX = 512
#: No-data value of the confidence band (confidence itself is a percentage, 0..100).
CONFIDENCE_NODATA = 255

Compression = Literal["DEFLATE", "ZSTD"]
OverviewResampling = Literal["mode", "average"]


@dataclass(frozen=True)
class BandSpec:
    """How one published band is written: its no-data value, overview resampling and meaning."""

    name: str
    nodata: int
    resampling: OverviewResampling
    description: str

    @property
    def file(self) -> str:
        """File name in the tile folder (BYOC's ``(BAND).tiff``)."""
        return f"{self.name}.tiff"


#: The published bands, in :data:`lcms_tasks.publish.BAND_NAMES` order.
BAND_SPECS: dict[str, BandSpec] = {
    "CLASS": BandSpec("CLASS", 0, "mode", "post-processed class id (legend id; 0 = no data)"),
    "CONFIDENCE": BandSpec(
        "CONFIDENCE",
        CONFIDENCE_NODATA,
        "average",
        f"confidence of the class, percent 0..100 ({CONFIDENCE_NODATA} = no data)",
    ),
    "CHANGE": BandSpec(
        "CHANGE",
        0,
        "mode",
        "relevant transition code since the before season (0 = no change, declared as no-data so viewers "
        "draw only changes)",
    ),
}


class CogCheckError(StageError):
    """A written COG breaks a BYOC or COG rule; ``problems`` holds one ``<file>: <rule>: <detail>`` line each.

    Permanent: writing the same data the same way again breaks the same rule.
    """

    permanent = True

    def __init__(self, problems: Sequence[str], *, where: str = "") -> None:
        self.problems = list(problems)
        head = f"{where}: " if where else ""
        super().__init__(f"{head}{len(self.problems)} COG/BYOC rule(s) broken: " + "; ".join(self.problems))


def byoc_accepts_epsg(epsg: int | None) -> bool:
    """True for the CRSs BYOC ingests: EPSG:4326, 3857, 3035 and the WGS84 UTM zones (326xx north, 327xx south)."""
    if epsg is None:
        return False
    return epsg in (4326, 3857, 3035) or 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760


def overview_levels(width: int, height: int, tile_size: int = TILE_SIZE) -> int:
    """How many 2x overviews take the image down to one tile (at least one above cog_validate's 512 px)."""
    levels = 0
    while max(width, height) / 2**levels > tile_size:
        levels += 1
    if levels == 0 and max(width, height) > COG_VALIDATE_OVERVIEW_PX:
        levels = 1
    return levels


def confidence_percent(confidence: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Confidence in [0, 1] as uint8 percent 0..100; :data:`CONFIDENCE_NODATA` where not ``valid`` or NaN."""
    conf = np.asarray(confidence, dtype=np.float32)
    finite = np.isfinite(conf)
    pct = np.rint(np.clip(np.where(finite, conf, 0.0), 0.0, 1.0) * 100.0).astype(np.uint8)
    return np.where(np.asarray(valid, dtype=bool) & finite, pct, np.uint8(CONFIDENCE_NODATA)).astype(np.uint8)


def write_cog(
    array: np.ndarray,
    path: Path,
    *,
    crs: Any,
    transform: Affine,
    nodata: int,
    resampling: OverviewResampling,
    compression: Compression = "DEFLATE",
    tile_size: int = TILE_SIZE,
    description: str = "",
) -> Path:
    """Write ``array`` ((H, W) uint8) as a single-band COG at ``path`` (see the module docstring)."""
    import rasterio
    from rasterio.io import MemoryFile
    from rio_cogeo.cogeo import cog_translate

    data = np.asarray(array)
    if data.ndim != 2:
        raise ValueError(f"{path}: a COG band is a 2-D array, got shape {data.shape}")
    if data.dtype != np.uint8:
        raise ValueError(f"{path}: published bands are uint8, got {data.dtype}")
    if not 0 <= nodata <= 255:
        raise ValueError(f"{path}: no-data value {nodata} does not fit uint8")
    height, width = data.shape
    source_profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": rasterio.crs.CRS.from_user_input(crs),
        "transform": transform,
        "nodata": nodata,
    }
    dst_profile = {
        "driver": "GTiff",
        "interleave": "pixel",
        "tiled": True,
        "blockxsize": tile_size,
        "blockysize": tile_size,
        "compress": compression,
        "photometric": "MINISBLACK",
    }
    # BYOC wants one tile size on every level: said explicitly, not left to GDAL's default (128 px before
    # GDAL 3.1, the main image's tile size since).
    config = {"GDAL_TIFF_OVR_BLOCKSIZE": str(tile_size)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with MemoryFile() as memfile:
        with memfile.open(**source_profile) as mem:
            mem.write(data, 1)
            if description:
                mem.set_band_description(1, description)
        with memfile.open() as src:
            cog_translate(
                src,
                str(path),
                dst_profile,
                nodata=nodata,
                overview_level=overview_levels(width, height, tile_size),
                overview_resampling=resampling,
                in_memory=True,
                config=config,
                quiet=True,
            )
    return path


def write_band(
    spec: BandSpec,
    array: np.ndarray,
    folder: Path,
    *,
    crs: Any,
    transform: Affine,
    compression: Compression = "DEFLATE",
) -> Path:
    """Write one published band (its no-data, resampling and description from ``spec``) into ``folder``."""
    return write_cog(
        array,
        folder / spec.file,
        crs=crs,
        transform=transform,
        nodata=spec.nodata,
        resampling=spec.resampling,
        compression=compression,
        description=spec.description,
    )


# -- checks ------------------------------------------------------------------------------------------


def _band_spec_for(path: Path, band: str | None) -> BandSpec | None:
    name = band if band is not None else path.stem
    return BAND_SPECS.get(name)


def check_byoc(path: Path | str, *, band: str | None = None, tile_size: int = TILE_SIZE) -> list[str]:
    """Problems of the COG at ``path`` against the COG and BYOC rules ([] when it passes).

    ``band`` (default: the file's stem, e.g. ``CLASS`` for ``CLASS.tiff``) selects the expected no-data
    value and overview resampling among :data:`BAND_SPECS`; for another name only their presence is checked.
    Each problem reads ``<path>: <rule>: <detail>``.
    """
    import rasterio
    import tifffile
    from rasterio.errors import RasterioIOError
    from rio_cogeo.cogeo import cog_validate

    p = Path(path)
    problems: list[str] = []

    def fail(rule: str, detail: str) -> None:
        problems.append(f"{p}: {rule}: {detail}")

    if not p.is_file():
        fail("exists", "no such file")
        return problems
    try:
        valid, errors, warns = cog_validate(str(p), strict=True, quiet=True)
    except (RasterioIOError, ValueError, KeyError) as err:  # not a TIFF at all, or one GDAL cannot describe
        fail("cog_validate", f"not readable as a GeoTIFF ({err})")
        return problems
    if not valid:
        fail("cog_validate", "; ".join([*errors, *warns]) or "not a valid COG")

    with tifffile.TiffFile(p) as tif:
        pages = [page.aspage() for page in tif.pages]
        first = pages[0]
        photometric = int(getattr(first, "photometric", -1))
        if photometric != 1:
            fail("photometric", f"PhotometricInterpretation is {photometric}, BYOC needs 1 (MINISBLACK)")
        if getattr(first, "colormap", None) is not None:
            fail("colormap", "the file carries a colour map (palette); published copies have none")
        if first.samplesperpixel != 1:
            fail("bands", f"{first.samplesperpixel} samples per pixel, one band per file is required")
        if first.bitspersample != 8 or int(first.sampleformat) != 1:
            fail("dtype", f"{first.bitspersample}-bit samples of format {int(first.sampleformat)}, uint8 is required")
        offsets = [int(o) for page in pages for o in getattr(page, "dataoffsets", ()) if int(o) > 0]
        header = min(offsets) if offsets else p.stat().st_size
        if header >= HEADER_LIMIT_BYTES:
            fail("header_size", f"header (ghost area and IFDs before the first tile) is {header} bytes, limit 1 MB")
        for level, page in enumerate(pages):
            name = "full resolution" if level == 0 else f"overview {level}"
            tw, tl = int(page.tilewidth), int(page.tilelength)
            if tw == 0 or tl == 0:
                fail("tile_size", f"{name} is stored in strips, not tiles")
            elif (tw, tl) != (tile_size, tile_size):
                fail("tile_size", f"{name} has {tw}x{tl} px tiles, {tile_size}x{tile_size} required on every level")

    with rasterio.open(p) as src:
        epsg = src.crs.to_epsg() if src.crs is not None else None
        if not byoc_accepts_epsg(epsg):
            crs_text = src.crs.to_string() if src.crs is not None else "none"
            fail("crs", f"CRS {crs_text} is not one BYOC accepts (EPSG:4326, 3857, 3035, 32601-32660, 32701-32760)")
        if src.count != 1 or src.dtypes[0] != "uint8":
            fail("bands", f"{src.count} band(s) of {', '.join(src.dtypes)}; one uint8 band is required")
        spec = _band_spec_for(p, band)
        if src.nodata is None:
            fail("nodata", "no no-data value declared")
        elif spec is not None and int(src.nodata) != spec.nodata:
            fail("nodata", f"no-data is {src.nodata:g}, {spec.name} declares {spec.nodata}")
        factors = src.overviews(1)
        width, height = src.width, src.height
        if max(width, height) > tile_size:
            smallest = max(width, height) // (factors[-1] if factors else 1)
            if smallest > tile_size:
                fail(
                    "overviews",
                    f"{width}x{height} px with overview factors {factors or 'none'}: the smallest level is "
                    f"{smallest} px, overviews must go down to one tile ({tile_size} px)",
                )
        recorded = src.tags().get("OVERVIEW_RESAMPLING")
        if spec is not None and recorded != spec.resampling.upper():
            fail(
                "overview_resampling", f"recorded {recorded or 'nothing'}, {spec.name} needs {spec.resampling.upper()}"
            )
        elif spec is None and factors and not recorded:
            fail("overview_resampling", "overviews without a recorded resampling (OVERVIEW_RESAMPLING tag)")
    return problems


def check_tile_folders(
    folders: Mapping[str, Mapping[str, str]], *, expected: Collection[str] | None = None
) -> list[str]:
    """Problems across tile folders: ``folders`` maps a folder to ``{file name: dtype}`` of its band files.

    Every folder must hold the same file names — ``expected`` when given, else the set most folders
    hold — and each file name the same data type in every folder.
    """
    problems: list[str] = []
    if not folders:
        return problems
    name_sets = {folder: frozenset(files) for folder, files in folders.items()}
    if expected is not None:
        reference, against = frozenset(expected), "the published bands"
    else:
        counts = Counter(name_sets.values())
        reference = max(counts, key=lambda names: (counts[names], len(names), sorted(names)))
        against = f"the {counts[reference]} folder(s) holding {sorted(reference)}"
    for folder, names in sorted(name_sets.items()):
        if names != reference:
            missing = sorted(reference - names)
            extra = sorted(names - reference)
            detail = ", ".join(
                part for part in (f"missing {missing}" if missing else "", f"extra {extra}" if extra else "") if part
            )
            problems.append(f"{folder}: file_names: {detail} (compared with {against})")
    by_file: dict[str, dict[str, list[str]]] = {}
    for folder, files in folders.items():
        for name, dtype in files.items():
            by_file.setdefault(name, {}).setdefault(dtype, []).append(folder)
    for name, dtypes in sorted(by_file.items()):
        if len(dtypes) > 1:
            found = ", ".join(f"{dt} in {len(f)} folder(s), e.g. {sorted(f)[0]}" for dt, f in sorted(dtypes.items()))
            problems.append(f"{name}: bit_depth: one bit depth per band is required across tiles, found {found}")
    return problems


# -- benchmark ---------------------------------------------------------------------------------------


def bench_cog_write(size_px: int = 1000, *, repeats: int = 3, compression: Compression = "DEFLATE") -> dict[str, Any]:
    """Seconds to write the three published bands (with overviews) of a ``size_px`` tile; best of ``repeats``.

    The arrays look like a real map (class patches, smooth confidence, a few change patches), so the
    compression works as hard as it does in production. Target: <= 1 s for 1000 px.
    """
    from affine import Affine

    rng = np.random.default_rng(0)
    block = 25
    coarse = rng.integers(1, 9, size=(size_px // block + 1, size_px // block + 1), dtype=np.uint8)
    classes = np.kron(coarse, np.ones((block, block), dtype=np.uint8))[:size_px, :size_px]
    classes[rng.random(classes.shape) < 0.02] = rng.integers(1, 9, dtype=np.uint8)
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    confidence = confidence_percent(0.5 + 0.5 * np.sin(xx / 37.0) * np.cos(yy / 53.0), classes > 0)
    change = np.where(np.kron(rng.random(coarse.shape) < 0.05, np.ones((block, block), dtype=bool)), 3, 0)
    arrays = {"CLASS": classes, "CONFIDENCE": confidence, "CHANGE": change[:size_px, :size_px].astype(np.uint8)}
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4400000.0)
    times: list[float] = []
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="lcms-bench-cog-") as tmp:
        folder = Path(tmp)
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            for name, array in arrays.items():
                write_band(
                    BAND_SPECS[name], array, folder, crs="EPSG:32638", transform=transform, compression=compression
                )
            times.append(time.perf_counter() - t0)
        problems = [p for name in arrays for p in check_byoc(folder / BAND_SPECS[name].file)]
        sizes = {name: (folder / BAND_SPECS[name].file).stat().st_size for name in arrays}
    best = min(times)
    return {
        "size_px": size_px,
        "bands": list(arrays),
        "compression": compression,
        "overview_levels": overview_levels(size_px, size_px),
        "seconds": round(best, 4),
        "seconds_all_runs": [round(t, 4) for t in times],
        "bytes": sizes,
        "target_seconds": 1.0,
        "met": best <= 1.0,
        "byoc_problems": problems,
    }
