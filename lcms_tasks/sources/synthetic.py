"""Deterministic synthetic Sentinel-2 time series, standing in for Sentinel Hub when there is no account.

The generator works in three steps, all pure functions over numpy arrays:

1. :func:`generate_scene` draws a land-cover map for a tile: rectangular agricultural fields (recursive
   rectangular splitting of large blocks), smooth forest / water / wetland blobs, blocky settlements,
   and a crop type per cropland field.  :func:`scene_from_labels` builds the same structure from
   rasterised reference polygons instead.
2. :func:`generate_changes` turns a scene into the scene of the next season by applying a few realistic
   land-cover transitions (new buildings, clear-cuts, ponds, field abandonment);
   :func:`scene_for_season` chains it so consecutive seasons of a tile are consistent.
3. :func:`simulate_acquisitions` renders a scene as a stack of 13-band Level-2A-like acquisitions:
   per-pixel linear mixing of green vegetation, dry vegetation and a kind-specific background
   (soil, water, urban materials), the vegetation fractions following per-kind / per-crop
   double-logistic phenology; plus noise, haze, moving clouds with their shadows, fully cloudy dates,
   missing dates and no-data swath edges.

Everything is keyed: a string ``key`` and ``params.seed`` are hashed with SHA-256 into the seed of a
``numpy.random.Generator``, so the same inputs give bit-identical outputs on every run and machine.

Parcel characteristics that do not change from one year to the next (soil brightness, canopy density,
crop variety, water turbidity) are derived from the parcel's own geometry rather than from ``key``, so an
unchanged parcel looks alike in every season.  That is what makes change detection between seasons
meaningful: only the truly changed areas (and the weather) differ.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import label as _label_equal_regions

from lcms_tasks.bands import S2_BANDS, S2_NODATA_DN, S2_QUANTIFICATION

__all__ = [
    "CROP_KINDS",
    "KINDS",
    "Acquisitions",
    "Change",
    "Scene",
    "SyntheticParams",
    "generate_changes",
    "generate_scene",
    "scene_for_season",
    "scene_from_labels",
    "simulate_acquisitions",
    "stream_acquisitions",
]


@dataclass(frozen=True)
class SyntheticParams:
    """Knobs of the generator; the defaults give a realistic, moderately cloudy temperate season."""

    seed: int = 42
    revisit_days: int = 5  # nominal revisit
    missing_date_fraction: float = 0.1  # share of nominal dates with no acquisition
    cloud_cover: float = 0.3  # mean cloud fraction per date
    fully_cloudy_fraction: float = 0.08  # share of dates fully cloudy
    nodata_edge_fraction: float = 0.1  # share of dates with a no-data swath edge
    noise: float = 0.01  # per-pixel reflectance noise (std)
    change_fraction: float = 0.06  # approx. share of a tile's area that changes between consecutive seasons


#: Land cover "kinds" the generator knows.  Rasters store ``KINDS.index(kind) + 1`` (0 = none).
KINDS: tuple[str, ...] = (
    "cropland",
    "forest",
    "grassland",
    "water",
    "built_up",
    "bare_land",
    "shrubland",
    "wetland",
)
#: Crop kinds, for crop-type legends and the fields inside cropland.  Rasters store index + 1.
CROP_KINDS: tuple[str, ...] = ("winter_cereal", "maize", "cotton", "sunflower", "vineyard", "sugar_beet")


@dataclass
class Scene:
    """Ground truth of one tile for one season."""

    land_cover: np.ndarray  # (H, W) uint8: index into KINDS + 1 (0 = none)
    crop: np.ndarray  # (H, W) uint8: index into CROP_KINDS + 1 where land cover is cropland, else 0
    parcel_id: np.ndarray  # (H, W) int32: id of the field/patch each pixel belongs to (unique, > 0)


@dataclass
class Change:
    """One changed area between two consecutive seasons."""

    geometry_pixels: np.ndarray  # (H, W) bool mask of the changed area
    from_kind: str  # KINDS value before
    to_kind: str  # KINDS value after
    change_id: int


@dataclass
class Acquisitions:
    """A simulated Sentinel-2 L2A time series of one tile."""

    dates: list[datetime.date]  # acquisition dates, strictly increasing, within [start, end]
    bands: np.ndarray  # (T, H, W, 13) uint16 DN, 0 where no data
    data_mask: np.ndarray  # (T, H, W) bool, True where there is data
    cloud_mask: np.ndarray  # (T, H, W) bool, True where cloud or cloud shadow is flagged
    cloud_probability: np.ndarray  # (T, H, W) uint8 0..100


# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

_K = {name: i + 1 for i, name in enumerate(KINDS)}  # kind name -> raster code
_C = {name: i + 1 for i, name in enumerate(CROP_KINDS)}  # crop name -> raster code
_N_BANDS = len(S2_BANDS)

#: Typical land-cover proportions of a tile (KINDS order); each tile varies around them.
_KIND_SHARES = np.array([0.40, 0.20, 0.15, 0.05, 0.08, 0.05, 0.05, 0.02])
#: Typical crop proportions inside cropland (CROP_KINDS order).
_CROP_SHARES = np.array([0.30, 0.22, 0.10, 0.15, 0.13, 0.10])

#: Change transitions: (from kind, to kind, geometry builder, relative frequency).
_TRANSITIONS: tuple[tuple[str, str, str, float], ...] = (
    ("cropland", "built_up", "rectangle", 0.25),
    ("forest", "bare_land", "clearing", 0.20),
    ("cropland", "water", "pond", 0.10),
    ("grassland", "water", "pond", 0.10),
    ("cropland", "grassland", "whole", 0.20),
    ("grassland", "built_up", "rectangle", 0.15),
)
_PSF_SIGMA = 0.6  # pixels: S2 10 m bands' effective point-spread function, incl. resampling
_MIN_CHANGE_PIXELS = 100  # a change must survive a minimum-mapping-unit filter of ~1 ha


def _spectrum(values: dict[str, float]) -> np.ndarray:
    """Reflectance spectrum in :data:`S2_BANDS` order from a band-name mapping (band order not baked in)."""
    return np.array([values[b] for b in S2_BANDS], dtype=np.float32)


# Endmember reflectances.  B10 (cirrus, 1375 nm) is almost fully absorbed by water vapour: near zero at
# the surface, non-zero only on clouds.
_GREEN_CROP = _spectrum(
    {  # herbaceous canopy: chlorophyll red well, steep red edge, high NIR plateau
        "B01": 0.030,
        "B02": 0.035,
        "B03": 0.075,
        "B04": 0.038,
        "B05": 0.110,
        "B06": 0.300,
        "B07": 0.400,
        "B08": 0.440,
        "B8A": 0.450,
        "B09": 0.420,
        "B10": 0.008,
        "B11": 0.220,
        "B12": 0.110,
    }
)
_GREEN_CANOPY = _spectrum(
    {  # tree/shrub canopy: darker (shadowing, needles), lower NIR and SWIR
        "B01": 0.022,
        "B02": 0.025,
        "B03": 0.045,
        "B04": 0.025,
        "B05": 0.070,
        "B06": 0.200,
        "B07": 0.270,
        "B08": 0.300,
        "B8A": 0.310,
        "B09": 0.290,
        "B10": 0.006,
        "B11": 0.140,
        "B12": 0.065,
    }
)
_DRY_VEG = _spectrum(
    {  # senescent vegetation / straw: no red well, high SWIR (cellulose, lignin)
        "B01": 0.060,
        "B02": 0.070,
        "B03": 0.100,
        "B04": 0.130,
        "B05": 0.160,
        "B06": 0.190,
        "B07": 0.210,
        "B08": 0.230,
        "B8A": 0.240,
        "B09": 0.235,
        "B10": 0.010,
        "B11": 0.340,
        "B12": 0.260,
    }
)
_SOIL = _spectrum(
    {  # loamy soil: reflectance rising steadily with wavelength
        "B01": 0.070,
        "B02": 0.085,
        "B03": 0.125,
        "B04": 0.175,
        "B05": 0.205,
        "B06": 0.225,
        "B07": 0.240,
        "B08": 0.255,
        "B8A": 0.265,
        "B09": 0.260,
        "B10": 0.010,
        "B11": 0.360,
        "B12": 0.310,
    }
)
_ROCK = _spectrum(
    {  # grey rock / gravel: brighter in the blue, flatter curve
        "B01": 0.110,
        "B02": 0.130,
        "B03": 0.160,
        "B04": 0.185,
        "B05": 0.200,
        "B06": 0.210,
        "B07": 0.220,
        "B08": 0.230,
        "B8A": 0.235,
        "B09": 0.230,
        "B10": 0.010,
        "B11": 0.280,
        "B12": 0.240,
    }
)
_URBAN = _spectrum(
    {  # mix of asphalt, concrete, roofs: flat visible, SWIR above NIR (positive NDBI)
        "B01": 0.110,
        "B02": 0.115,
        "B03": 0.125,
        "B04": 0.135,
        "B05": 0.145,
        "B06": 0.155,
        "B07": 0.162,
        "B08": 0.170,
        "B8A": 0.175,
        "B09": 0.170,
        "B10": 0.009,
        "B11": 0.235,
        "B12": 0.215,
    }
)
_WATER = _spectrum(
    {  # clear water: a little blue/green, almost black in NIR and SWIR
        "B01": 0.060,
        "B02": 0.055,
        "B03": 0.048,
        "B04": 0.030,
        "B05": 0.022,
        "B06": 0.014,
        "B07": 0.011,
        "B08": 0.009,
        "B8A": 0.008,
        "B09": 0.006,
        "B10": 0.002,
        "B11": 0.004,
        "B12": 0.003,
    }
)
_TURBIDITY = _spectrum(
    {  # added by suspended sediment / algae at full turbidity
        "B01": 0.010,
        "B02": 0.020,
        "B03": 0.040,
        "B04": 0.040,
        "B05": 0.030,
        "B06": 0.012,
        "B07": 0.008,
        "B08": 0.007,
        "B8A": 0.006,
        "B09": 0.004,
        "B10": 0.000,
        "B11": 0.002,
        "B12": 0.001,
    }
)
_CLOUD = _spectrum(
    {  # thick cloud: bright and nearly flat, a bit darker in SWIR (ice/water absorption)
        "B01": 0.52,
        "B02": 0.50,
        "B03": 0.49,
        "B04": 0.48,
        "B05": 0.48,
        "B06": 0.48,
        "B07": 0.48,
        "B08": 0.48,
        "B8A": 0.48,
        "B09": 0.45,
        "B10": 0.10,
        "B11": 0.38,
        "B12": 0.26,
    }
)
_HAZE = _spectrum(
    {  # aerosol path radiance: strongest in the blue
        "B01": 1.0,
        "B02": 0.80,
        "B03": 0.55,
        "B04": 0.35,
        "B05": 0.25,
        "B06": 0.20,
        "B07": 0.15,
        "B08": 0.12,
        "B8A": 0.11,
        "B09": 0.10,
        "B10": 0.00,
        "B11": 0.03,
        "B12": 0.02,
    }
)


@dataclass(frozen=True)
class _Phenology:
    """Double-logistic green / dry vegetation fractions of one kind or crop (days of year)."""

    g_pre: float  # green fraction before green-up
    g_max: float  # green fraction at the plateau
    g_post: float  # green fraction after senescence
    sos: float  # start of season (inflection of green-up)
    r_sos: float  # green-up steepness (days)
    eos: float  # end of season (inflection of senescence)
    r_eos: float  # senescence steepness (days)
    harvest: float  # day the dry biomass is removed
    d_pre: float  # dry fraction before green-up (residues)
    d_max: float  # dry fraction between senescence and harvest
    d_post: float  # dry fraction after harvest (stubble)
    texture: float  # within-parcel relative variation of the green fraction


_CROP_PHENOLOGY: dict[str, _Phenology] = {
    # autumn-sown: already green in spring, peak Apr-May, ripening June, harvest early July
    "winter_cereal": _Phenology(0.30, 0.90, 0.00, 80, 9, 160, 7, 192, 0.00, 0.75, 0.35, 0.08),
    # summer crops: bare soil until May/June, each with its own timing and length
    "maize": _Phenology(0.00, 0.95, 0.00, 160, 8, 245, 9, 280, 0.10, 0.60, 0.25, 0.08),
    "cotton": _Phenology(0.00, 0.82, 0.00, 172, 10, 258, 10, 295, 0.05, 0.50, 0.15, 0.10),
    "sunflower": _Phenology(0.00, 0.85, 0.00, 130, 7, 200, 6, 245, 0.05, 0.65, 0.20, 0.08),
    # perennial rows: soil between rows keeps the green fraction moderate
    "vineyard": _Phenology(0.12, 0.50, 0.12, 125, 10, 270, 12, 300, 0.10, 0.15, 0.15, 0.15),
    # long season, green until harvest in October
    "sugar_beet": _Phenology(0.00, 0.95, 0.00, 140, 10, 275, 10, 290, 0.05, 0.15, 0.05, 0.08),
}
# cropland pixels without a crop type (user-built scenes) behave like a generic spring crop
_GENERIC_CROP = _Phenology(0.05, 0.85, 0.00, 120, 9, 210, 8, 240, 0.05, 0.60, 0.25, 0.08)

_KIND_PHENOLOGY: dict[str, _Phenology] = {
    # evergreen-ish: dense all year with a summer maximum (broadleaf share varies per stand)
    "forest": _Phenology(0.62, 0.90, 0.62, 110, 10, 290, 10, 400, 0.05, 0.05, 0.05, 0.08),
    # green spring, summer dry-down; mowing dips are added separately
    "grassland": _Phenology(0.45, 0.82, 0.35, 85, 10, 195, 15, 275, 0.10, 0.30, 0.15, 0.12),
    "water": _Phenology(0.0, 0.0, 0.0, 100, 10, 300, 10, 400, 0.0, 0.0, 0.0, 0.0),
    # gardens and street trees; the level is set per parcel
    "built_up": _Phenology(0.10, 0.15, 0.10, 110, 10, 290, 10, 400, 0.0, 0.0, 0.0, 0.50),
    "bare_land": _Phenology(0.02, 0.04, 0.02, 100, 10, 180, 10, 400, 0.03, 0.03, 0.03, 0.30),
    # sparse evergreen shrubs over bright soil, short spring flush
    "shrubland": _Phenology(0.25, 0.42, 0.22, 80, 12, 175, 15, 300, 0.20, 0.20, 0.15, 0.25),
    # reeds: summer green, standing dead biomass through the winter
    "wetland": _Phenology(0.15, 0.70, 0.12, 120, 10, 265, 10, 330, 0.35, 0.40, 0.35, 0.20),
}

# Share of canopy-like (dark) green spectrum in each kind's vegetation, and whether the background is
# soil (darkened by soil moisture) - KINDS order.
_CANOPY_SHARE = {"forest": 1.0, "shrubland": 0.7, "wetland": 0.3, "built_up": 0.5}
_SOIL_BACKGROUND = {
    "cropland": 1.0,
    "forest": 1.0,
    "grassland": 1.0,
    "water": 0.0,
    "built_up": 0.2,
    "bare_land": 1.0,
    "shrubland": 1.0,
    "wetland": 0.45,
}


# --------------------------------------------------------------------------------------------------
# Random helpers
# --------------------------------------------------------------------------------------------------


def _rng(params: SyntheticParams, key: str, purpose: str) -> np.random.Generator:
    """Generator seeded stably from (seed, key, purpose); ``hash()`` is salted per process, so use SHA-256."""
    digest = hashlib.sha256(f"{int(params.seed)}\x1f{key}\x1f{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser: a stable integer hash (uint64 arithmetic wraps by design)."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _hash_uniform(signature: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) float64 per signature, independent between ``stream`` numbers."""
    h = _splitmix64(signature ^ _splitmix64(np.full(signature.shape, stream, dtype=np.uint64)))
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 2**53)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Standardised gaussian-filtered white noise (float32) with correlation length ~``sigma`` pixels.

    Large sigmas are filtered on a coarse grid and upsampled bilinearly: same look, a fraction of the cost.
    """
    h, w = shape
    factor = max(1, int(sigma // 3))
    coarse = rng.standard_normal((h // factor + 3, w // factor + 3))
    coarse = ndimage.gaussian_filter(coarse, sigma / factor, mode="reflect")
    field = ndimage.zoom(coarse, factor, order=1) if factor > 1 else coarse
    field = field[factor : factor + h, factor : factor + w].astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-6
    return field


def _top_share_mask(score: np.ndarray, eligible: np.ndarray, n_pixels: int) -> np.ndarray:
    """The ``n_pixels`` eligible pixels with the highest score (threshold on a smooth field -> blobs)."""
    mask = np.zeros(score.shape, dtype=bool)
    values = score[eligible]
    n = min(int(n_pixels), values.size)
    if n <= 0:
        return mask
    threshold = np.partition(values, values.size - n)[values.size - n]
    mask[eligible & (score >= threshold)] = True
    return mask


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or int(shape[0]) < 8 or int(shape[1]) < 8:
        raise ValueError(f"tile shape must be (H, W) with H, W >= 8, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _relabel(keys: np.ndarray) -> np.ndarray:
    """Parcel ids 1..N: 4-connected regions of equal ``keys`` (all keys must be > 0)."""
    return _label_equal_regions(keys, background=0, connectivity=1).astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------


def _split_rect(
    rng: np.random.Generator, rect: tuple[int, int, int, int], max_side: tuple[int, int], min_side: int
) -> list[tuple[int, int, int, int]]:
    """Recursive rectangular splitting of ``rect`` (y0, y1, x0, x1) until sides fall below a random size."""
    out = []
    stack = [rect]
    while stack:
        y0, y1, x0, x1 = stack.pop()
        h, w = y1 - y0, x1 - x0
        limit = rng.integers(max_side[0], max_side[1] + 1)
        if max(h, w) <= limit or max(h, w) < 2 * min_side:
            out.append((y0, y1, x0, x1))
            continue
        # cut across the longer side, not too close to the edge, so fields stay compact
        if h >= w:
            cut = y0 + int(rng.integers(max(min_side, int(h * 0.3)), min(h - min_side, int(h * 0.7)) + 1))
            stack += [(y0, cut, x0, x1), (cut, y1, x0, x1)]
        else:
            cut = x0 + int(rng.integers(max(min_side, int(w * 0.3)), min(w - min_side, int(w * 0.7)) + 1))
            stack += [(y0, y1, x0, cut), (y0, y1, cut, x1)]
    return out


def _partition_fields(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Field ids (1..F) of a tile: large blocks (400 m-1 km) cut into strips or compact fields (5-40 px)."""
    field = np.zeros((h, w), dtype=np.int32)
    next_id = 1
    for y0, y1, x0, x1 in _split_rect(rng, (0, h, 0, w), (45, 100), 12):
        bh, bw = y1 - y0, x1 - x0
        if rng.random() < 0.45:
            # parallel strips, typical of consolidated plains: 6-25 px wide, as long as the block
            along_rows = rng.random() < 0.5
            length = bh if along_rows else bw
            pos = 0
            while pos < length:
                width = int(rng.integers(6, 26))
                end = length if length - (pos + width) < 5 else pos + width
                if along_rows:
                    field[y0 + pos : y0 + end, x0:x1] = next_id
                else:
                    field[y0:y1, x0 + pos : x0 + end] = next_id
                next_id += 1
                pos = end
        else:
            for fy0, fy1, fx0, fx1 in _split_rect(rng, (y0, y1, x0, x1), (12, 40), 5):
                field[fy0:fy1, fx0:fx1] = next_id
                next_id += 1
    return field


def _river_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A meandering river 3-6 px wide crossing the tile (random orientation)."""
    transpose = rng.random() < 0.5
    rows, cols = (w, h) if transpose else (h, w)
    y = np.arange(rows, dtype=np.float64)
    wander = np.cumsum(rng.normal(0.0, 0.6, rows))
    wander = ndimage.gaussian_filter1d(wander, 8.0)
    centre = (
        rng.uniform(0.2, 0.8) * cols
        + rng.uniform(3, 12) * np.sin(2 * np.pi * y / rng.uniform(60, 160) + rng.uniform(0, 2 * np.pi))
        + wander
    )
    half_width = rng.uniform(1.5, 3.0)
    xx = np.arange(cols, dtype=np.float64)[None, :]
    mask = np.abs(xx - centre[:, None]) <= half_width
    return mask.T if transpose else mask


def _tile_shares(rng: np.random.Generator) -> np.ndarray:
    """Land-cover shares of this tile: around the typical ones, never losing a kind entirely."""
    return 0.4 * _KIND_SHARES + 0.6 * rng.dirichlet(_KIND_SHARES * 12.0)


def _pick_fields_by_score(
    field: np.ndarray, free: np.ndarray, score: np.ndarray, candidates: np.ndarray, n_pixels: float
) -> np.ndarray:
    """Field ids (from ``candidates``) with the highest mean score, until their free area reaches n_pixels."""
    n = int(field.max()) + 1
    area = np.bincount(field[free], minlength=n).astype(np.float64)
    mean_score = np.bincount(field[free], weights=score[free], minlength=n) / np.maximum(area, 1)
    order = candidates[np.argsort(-mean_score[candidates], kind="stable")]
    cum = np.cumsum(area[order])
    k = int(np.searchsorted(cum, n_pixels)) + 1 if n_pixels > 0 else 0
    return order[: min(k, order.size)]


def _assign_crops(rng: np.random.Generator, n_fields: int) -> np.ndarray:
    """Crop code per field, with tile-specific crop proportions."""
    shares = 0.5 * _CROP_SHARES + 0.5 * rng.dirichlet(_CROP_SHARES * 8.0)
    return (rng.choice(len(CROP_KINDS), size=n_fields, p=shares / shares.sum()) + 1).astype(np.uint8)


def generate_scene(shape: tuple[int, int], params: SyntheticParams, key: str) -> Scene:
    """A plausible land-cover scene of ``shape`` 10 m pixels, determined by ``params.seed`` and ``key``."""
    h, w = _check_shape(shape)
    rng = _rng(params, key, "scene")
    shares = _tile_shares(rng)
    area = h * w
    lc = np.zeros((h, w), dtype=np.uint8)
    scale = min(h, w)

    # Water: a river on some tiles, lakes (high threshold on smooth noise -> a few rounded bodies).
    water = np.zeros((h, w), dtype=bool)
    if rng.random() < 0.35:
        water |= _river_mask(rng, h, w)
    lake_score = _smooth_noise(rng, (h, w), min(10.0, scale / 8))
    water |= _top_share_mask(lake_score, ~water, shares[_K["water"] - 1] * area - water.sum())
    lc[water] = _K["water"]

    # Wetland: preferentially on lake and river shores, otherwise in low smooth depressions.
    dist_to_water = ndimage.distance_transform_edt(~water) if water.any() else np.full((h, w), 1e3)
    wet_score = _smooth_noise(rng, (h, w), min(6.0, scale / 10)) - 0.25 * np.minimum(dist_to_water, 40.0)
    wetland = _top_share_mask(wet_score, lc == 0, shares[_K["wetland"] - 1] * area)
    lc[wetland] = _K["wetland"]

    # Forest: large smooth blobs with ragged edges (fine noise added to the coarse field).
    forest_score = _smooth_noise(rng, (h, w), min(16.0, scale / 5)) + 0.3 * _smooth_noise(rng, (h, w), 1.5)
    forest = _top_share_mask(forest_score, lc == 0, shares[_K["forest"] - 1] * area)
    lc[forest] = _K["forest"]

    # The open land is a mosaic of rectangular fields; each field gets one kind, chosen with spatially
    # coherent scores so settlements and marginal land cluster instead of being scattered.
    field = _partition_fields(rng, h, w)
    free = lc == 0
    fields = np.unique(field[free])
    settlement_score = _smooth_noise(rng, (h, w), min(14.0, scale / 6))
    built = _pick_fields_by_score(field, free, settlement_score, fields, shares[_K["built_up"] - 1] * area)
    fields = np.setdiff1d(fields, built)
    marginal_score = _smooth_noise(rng, (h, w), min(12.0, scale / 6))
    n_marginal = (shares[_K["bare_land"] - 1] + shares[_K["shrubland"] - 1]) * area
    marginal = _pick_fields_by_score(field, free, marginal_score, fields, n_marginal)
    fields = np.setdiff1d(fields, marginal)
    grass_score = 0.6 * _smooth_noise(rng, (h, w), min(10.0, scale / 8)) + 0.8 * rng.standard_normal((h, w))
    grass = _pick_fields_by_score(field, free, grass_score, fields, shares[_K["grassland"] - 1] * area)

    kind_of_field = np.full(int(field.max()) + 1, _K["cropland"], dtype=np.uint8)
    kind_of_field[built] = _K["built_up"]
    kind_of_field[grass] = _K["grassland"]
    # marginal land: the barest part becomes bare land, the rest shrubland
    kind_of_field[marginal] = _K["shrubland"]
    bare_score = _smooth_noise(rng, (h, w), 4.0)
    bare = _pick_fields_by_score(field, free, bare_score, marginal, shares[_K["bare_land"] - 1] * area)
    kind_of_field[bare] = _K["bare_land"]
    lc[free] = kind_of_field[field[free]]

    crop_of_field = _assign_crops(rng, int(field.max()) + 1)
    crop = np.where(lc == _K["cropland"], crop_of_field[field], 0).astype(np.uint8)

    # Parcels: connected regions of one field and one kind (blob kinds: connected blobs).
    n_codes = len(KINDS) + 1
    keys = np.where(np.isin(lc, (_K["water"], _K["wetland"], _K["forest"])), 0, field.astype(np.int64) + 1)
    keys = keys * n_codes + lc
    return Scene(land_cover=lc, crop=crop, parcel_id=_relabel(keys))


def scene_from_labels(land_cover: np.ndarray, crop: np.ndarray | None, params: SyntheticParams, key: str) -> Scene:
    """A scene following rasterised reference labels.

    ``land_cover`` holds KINDS index + 1 (0 = unlabelled), ``crop`` CROP_KINDS index + 1 (0 = unknown).
    Unlabelled pixels are filled from a generated scene (keyed by ``key``) so the tile looks like a real
    landscape around the reference polygons.  A crop code on an unlabelled pixel makes it cropland; a crop
    code on a non-cropland pixel is dropped; cropland without a crop code gets a random crop per connected
    region.  Parcels are the 4-connected regions of equal (land cover, crop) labels.
    """
    lc = np.asarray(land_cover)
    if lc.ndim != 2:
        raise ValueError(f"land_cover must be 2-D, got shape {lc.shape}")
    if lc.size and (lc.min() < 0 or lc.max() > len(KINDS)):
        raise ValueError(f"land_cover values must be in 0..{len(KINDS)} (KINDS index + 1)")
    lc = lc.astype(np.uint8)
    if crop is None:
        cr = np.zeros(lc.shape, dtype=np.uint8)
    else:
        cr = np.asarray(crop)
        if cr.shape != lc.shape:
            raise ValueError(f"crop shape {cr.shape} differs from land_cover shape {lc.shape}")
        if cr.size and (cr.min() < 0 or cr.max() > len(CROP_KINDS)):
            raise ValueError(f"crop values must be in 0..{len(CROP_KINDS)} (CROP_KINDS index + 1)")
        cr = cr.astype(np.uint8)
    filler = generate_scene((lc.shape[0], lc.shape[1]), params, key)

    lc[(lc == 0) & (cr > 0)] = _K["cropland"]
    unlabelled = lc == 0
    lc[unlabelled] = filler.land_cover[unlabelled]
    cr = np.where(lc == _K["cropland"], cr, 0).astype(np.uint8)
    cr[unlabelled] = filler.crop[unlabelled]

    # cropland reference without crop type: one random crop per connected region
    missing = (lc == _K["cropland"]) & (cr == 0)
    if missing.any():
        regions, n = ndimage.label(missing)
        rng = _rng(params, key, "labels-crops")
        cr[missing] = _assign_crops(rng, n + 1)[regions[missing]]

    # labelled pixels: regions of equal labels; filler pixels keep the filler's field structure
    n_codes = (len(KINDS) + 1) * (len(CROP_KINDS) + 1)
    label_key = lc.astype(np.int64) * (len(CROP_KINDS) + 1) + cr
    keys = np.where(unlabelled, n_codes * (filler.parcel_id.astype(np.int64) + 1) + label_key, label_key)
    return Scene(land_cover=lc, crop=cr, parcel_id=_relabel(keys))


# --------------------------------------------------------------------------------------------------
# Changes
# --------------------------------------------------------------------------------------------------


def _largest_component(mask: np.ndarray) -> np.ndarray:
    regions, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    return regions == int(np.argmax(sizes))


def _change_geometry(rng: np.random.Generator, builder: str, parcel: np.ndarray, size: float) -> np.ndarray:
    """Mask of a change of about ``size`` pixels inside ``parcel`` (bool mask), drawn by ``builder``."""
    h, w = parcel.shape
    ys, xs = np.nonzero(parcel)
    if builder == "whole":
        return parcel.copy()
    centre_i = int(rng.integers(ys.size))
    cy, cx = float(ys[centre_i]), float(xs[centre_i])
    yy, xx = np.ogrid[:h, :w]
    if builder == "rectangle" or (builder == "clearing" and rng.random() < 0.5):
        # buildings and clear-cuts follow straight lines (plots, forestry compartments)
        aspect = rng.uniform(0.6, 1.7)
        rh = max(6, round(float(np.sqrt(size * aspect))))
        rw = max(6, round(float(size) / rh))
        y0 = int(np.clip(cy - rh // 2, 0, max(0, h - rh)))
        x0 = int(np.clip(cx - rw // 2, 0, max(0, w - rw)))
        shape = np.zeros((h, w), dtype=bool)
        shape[y0 : y0 + rh, x0 : x0 + rw] = True
    else:
        # ponds and irregular clearings: (slightly wobbly) ellipses
        aspect = rng.uniform(0.6, 1.6)
        a = np.sqrt(size / np.pi * aspect)
        b = np.sqrt(size / np.pi / aspect)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
        wobble = 0.15 * _smooth_noise(rng, (h, w), 3.0) if builder == "clearing" else 0.0
        shape = (u * u + v * v) <= 1.0 + wobble
    return shape & parcel


def generate_changes(scene: Scene, params: SyntheticParams, key: str) -> tuple[Scene, list[Change]]:
    """Apply a few realistic land-cover transitions to ``scene``; returns the after-scene and the changes.

    The changed areas cover about ``params.change_fraction`` of the tile (at least one change of >= 100
    pixels when the tile allows it).  Outside the change masks the after-scene equals ``scene``; changed
    areas get new parcel ids.  The input scene is not modified.
    """
    lc = scene.land_cover.copy()
    crop = scene.crop.copy()
    pid = scene.parcel_id.astype(np.int32, copy=True)
    h, w = lc.shape
    target = float(params.change_fraction) * h * w
    changes: list[Change] = []
    if target <= 0:
        return Scene(lc, crop, pid), changes

    rng = _rng(params, key, "changes")
    n_planned = int(np.clip(round(target / rng.uniform(250, 450)), 1, 400))
    sizes = np.maximum(target * rng.dirichlet(np.full(n_planned, 4.0)), 1.3 * _MIN_CHANGE_PIXELS)
    weights = np.array([t[3] for t in _TRANSITIONS])
    taken = np.zeros((h, w), dtype=bool)
    next_id = int(pid.max()) + 1
    total = 0
    queue = list(sizes)
    extra_rounds = 4  # failed attempts leave the total short: top up with a few more changes
    while queue:
        size = queue.pop(0)
        if total >= target * 1.15:
            break
        for _attempt in range(12):
            choice = int(rng.choice(len(_TRANSITIONS), p=weights / weights.sum()))
            from_kind, to_kind, builder, _ = _TRANSITIONS[choice]
            source = (lc == _K[from_kind]) & ~taken
            ids = pid[source]
            if ids.size < _MIN_CHANGE_PIXELS:
                continue
            counts = np.bincount(ids)
            # whole-field conversions only for fields of about the planned size; others need room
            if builder == "whole":
                ok = np.nonzero((counts >= _MIN_CHANGE_PIXELS) & (counts <= 2.5 * size))[0]
            else:
                ok = np.nonzero(counts >= max(_MIN_CHANGE_PIXELS, 0.6 * size))[0]
            if ok.size == 0:
                continue
            parcel = source & (pid == int(rng.choice(ok)))
            mask = _largest_component(_change_geometry(rng, builder, parcel, size))
            if mask.sum() < _MIN_CHANGE_PIXELS:
                continue
            lc[mask] = _K[to_kind]
            crop[mask] = 0  # no transition ends in cropland
            pid[mask] = next_id
            next_id += 1
            # keep a 1-px gap between changes so they stay separate objects
            taken |= ndimage.binary_dilation(mask)
            total += int(mask.sum())
            changes.append(Change(mask, from_kind, to_kind, len(changes) + 1))
            break
        if not queue and total < 0.85 * target and extra_rounds > 0:
            extra_rounds -= 1
            queue.append(max(target - total, 1.3 * _MIN_CHANGE_PIXELS))
    return Scene(lc, crop, pid), changes


def scene_for_season(
    shape: tuple[int, int], params: SyntheticParams, tile_key: str, season_index: int
) -> tuple[Scene, list[Change]]:
    """Scene of season ``season_index`` of a tile and the changes from the previous season (none for 0).

    Season 0 is :func:`generate_scene`; season k applies :func:`generate_changes` k times (keyed by
    ``tile_key`` and the season), so every season of a tile is consistent with the previous one.
    """
    if season_index < 0:
        raise ValueError(f"season_index must be >= 0, got {season_index}")
    scene = generate_scene(shape, params, tile_key)
    changes: list[Change] = []
    for k in range(1, season_index + 1):
        scene, changes = generate_changes(scene, params, f"{tile_key}/season-{k}")
    return scene, changes


# --------------------------------------------------------------------------------------------------
# Acquisitions
# --------------------------------------------------------------------------------------------------


def _acquisition_dates(
    rng: np.random.Generator, start: datetime.date, end: datetime.date, params: SyntheticParams
) -> list[datetime.date]:
    """Nominal revisit dates from ``start``, minus a random share of missing ones (>= 3 kept if possible)."""
    if params.revisit_days < 1:
        raise ValueError(f"revisit_days must be >= 1, got {params.revisit_days}")
    n = (end - start).days // params.revisit_days + 1
    nominal = [start + datetime.timedelta(days=k * params.revisit_days) for k in range(n)]
    n_drop = min(round(float(params.missing_date_fraction) * n), max(0, n - 3))
    drop = set(rng.choice(n, size=n_drop, replace=False).tolist()) if n_drop > 0 else set()
    return [d for k, d in enumerate(nominal) if k not in drop]


def _logistic(t: np.ndarray, mid: np.ndarray, rate: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip((t - mid) / rate, -60.0, 60.0)))


@dataclass
class _Units:
    """Homogeneous units of a scene (one parcel, one kind, one crop) and their pixel map."""

    index: np.ndarray  # (H, W) int32 unit index of each pixel
    kind: np.ndarray  # (U,) kind code
    crop: np.ndarray  # (U,) crop code
    signature: np.ndarray  # (U,) uint64 hash of the unit's geometry: stable across seasons


def _scene_units(scene: Scene, seed: int) -> _Units:
    lc = scene.land_cover.astype(np.int64)
    key = (scene.parcel_id.astype(np.int64) * (len(KINDS) + 1) + lc) * (len(CROP_KINDS) + 1) + scene.crop
    uniq, inverse = np.unique(key, return_inverse=True)
    index = inverse.reshape(lc.shape).astype(np.int32)
    n_codes = len(CROP_KINDS) + 1
    crop = (uniq % n_codes).astype(np.int64)
    kind = ((uniq // n_codes) % (len(KINDS) + 1)).astype(np.int64)
    # geometry signature: bounding box and pixel count (unchanged parcel -> same signature every season)
    n_units = uniq.size
    counts = np.bincount(index.ravel(), minlength=n_units)
    boxes = np.zeros((n_units, 4), dtype=np.int64)
    for u, sl in enumerate(ndimage.find_objects(index + 1)):
        if sl is not None:
            boxes[u] = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
    sig = np.full(n_units, np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    for column in (kind, crop, counts, boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]):
        sig = _splitmix64(sig ^ column.astype(np.uint64))
    return _Units(index=index, kind=kind, crop=crop, signature=sig)


def _phenology_table(units: _Units) -> dict[str, np.ndarray]:
    """Per-unit phenology parameters (arrays of shape (U,)) from the kind / crop tables."""
    fields = _Phenology.__dataclass_fields__
    table = {name: np.zeros(units.kind.size) for name in fields}
    for u in range(units.kind.size):
        kind = KINDS[units.kind[u] - 1] if units.kind[u] > 0 else "grassland"
        if kind == "cropland":
            ph = _CROP_PHENOLOGY[CROP_KINDS[units.crop[u] - 1]] if units.crop[u] > 0 else _GENERIC_CROP
        else:
            ph = _KIND_PHENOLOGY[kind]
        for name in fields:
            table[name][u] = getattr(ph, name)
    return table


def _recovery(t: np.ndarray, day: np.ndarray, tau: float) -> np.ndarray:
    """(T, N) exponential decay after each unit's event ``day`` (0 before it)."""
    since = t[:, None] - day[None, :]
    return np.where(since >= 0, np.exp(-np.maximum(since, 0.0) / tau), 0.0)


def _vegetation_curves(
    rng: np.random.Generator, units: _Units, doy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Green, dry and turbidity fractions per (date, unit), float32 arrays of shape (T, U)."""
    p = _phenology_table(units)
    n = units.kind.size
    sig = units.signature
    kind = units.kind

    # Timing: persistent variety/site offset + this year's sowing/weather offset + tile-wide offset.
    shift = 12.0 * (_hash_uniform(sig, 1) - 0.5) + rng.uniform(-6.0, 6.0, n) + rng.uniform(-4.0, 4.0)
    amplitude = 0.8 + 0.25 * _hash_uniform(sig, 2)  # canopy density of the parcel, 0.80-1.05
    g_pre = p["g_pre"].copy()
    g_max = p["g_max"] * amplitude
    g_post = p["g_post"].copy()
    # forest stands range from deciduous (low winter level) to evergreen
    forest = kind == _K["forest"]
    g_pre[forest] = g_post[forest] = 0.45 + 0.35 * _hash_uniform(sig[forest], 3)
    # built-up: garden/street-tree share is a property of the district
    built = kind == _K["built_up"]
    level = 0.04 + 0.25 * _hash_uniform(sig[built], 4)
    g_pre[built], g_max[built], g_post[built] = 0.7 * level, level, 0.7 * level

    t = doy[:, None].astype(np.float64)
    sos, eos, harvest = p["sos"] + shift, p["eos"] + shift, p["harvest"] + shift
    l_sos = _logistic(t, sos, p["r_sos"])
    l_eos = _logistic(t, eos, p["r_eos"])
    l_harv = _logistic(t, harvest, np.full(n, 2.5))
    green = g_pre + (g_max - g_pre) * l_sos - (g_max - g_post) * l_eos
    dry = p["d_pre"] * (1 - l_sos) + p["d_max"] * amplitude * (l_eos - l_harv) + p["d_post"] * l_harv

    # Grassland mowing: 0-3 cuts between May and August; sharp drop, regrowth over ~3 weeks, hay drying.
    grass = np.nonzero(kind == _K["grassland"])[0]
    if grass.size:
        n_cuts = rng.integers(0, 4, grass.size)
        for c in range(3):
            day = rng.uniform(125, 235, grass.size)
            depth = rng.uniform(0.45, 0.7, grass.size) * (c < n_cuts)
            green[:, grass] *= 1.0 - depth * _recovery(t[:, 0], day, 20.0)
            dry[:, grass] += 0.25 * depth * _recovery(t[:, 0], day, 6.0)

    green = np.clip(green, 0.0, 0.98)
    dry = np.clip(np.minimum(dry, 1.0 - green), 0.0, 1.0)

    # Water turbidity: persistent level plus a smooth seasonal swing (blooms, floods).
    water_like = np.isin(kind, (_K["water"], _K["wetland"]))
    base = 0.5 * _hash_uniform(sig, 5)
    phase = rng.uniform(0, 2 * np.pi, n)
    swing = rng.uniform(0.0, 0.25, n)
    turbidity = np.clip(base + swing * np.sin(2 * np.pi * t / 365.0 + phase), 0.0, 1.0) * water_like
    return green.astype(np.float32), dry.astype(np.float32), turbidity.astype(np.float32)


def _static_layers(
    rng: np.random.Generator, units: _Units, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel background spectrum, green spectrum (both (H, W, 13)), soil weight and green texture."""
    sig, kind = units.signature, units.kind
    n = kind.size
    r_soil, r_bright, r_canopy = _hash_uniform(sig, 6), _hash_uniform(sig, 7), _hash_uniform(sig, 8)

    # Background: soil whose colour (loam vs grey rock) and brightness are properties of the parcel.
    rock_share = 0.5 * r_soil
    brightness = 0.7 + 0.55 * r_bright
    bare = kind == _K["bare_land"]
    rock_share[bare] = r_soil[bare]
    brightness[bare] = 0.9 + 0.6 * r_bright[bare]
    shrub = kind == _K["shrubland"]
    brightness[shrub] = 1.0 + 0.4 * r_bright[shrub]
    soil = (1 - rock_share)[:, None] * _SOIL + rock_share[:, None] * _ROCK
    background = brightness[:, None] * soil
    built = kind == _K["built_up"]
    background[built] = (0.8 + 0.4 * r_bright[built])[:, None] * _URBAN * 0.85 + 0.15 * soil[built]
    background[kind == _K["water"]] = _WATER
    wet = kind == _K["wetland"]
    background[wet] = 0.55 * _WATER + 0.45 * 0.6 * soil[wet]

    canopy = np.array([_CANOPY_SHARE.get(KINDS[k - 1], 0.0) if k > 0 else 0.0 for k in kind])
    canopy = np.clip(canopy + 0.2 * (r_canopy - 0.5) * (canopy > 0), 0.0, 1.0)
    green = _GREEN_CROP + canopy[:, None] * (_GREEN_CANOPY - _GREEN_CROP)
    soil_weight = np.array([_SOIL_BACKGROUND.get(KINDS[k - 1], 1.0) if k > 0 else 1.0 for k in kind])
    texture_amp = _phenology_table(units)["texture"] if n else np.zeros(0)

    idx = units.index
    h, w = shape
    # within-parcel variability: smooth (soil patches, canopy gaps) plus a little pixel-level speckle
    tex_b = 1.0 + 0.05 * _smooth_noise(rng, shape, 3.0) + 0.02 * rng.standard_normal(shape, dtype=np.float32)
    built_px = kind[idx] == _K["built_up"]
    tex_b[built_px] += 0.12 * _smooth_noise(rng, shape, 0.8)[built_px]  # roofs of different materials
    bg = background.astype(np.float32)[idx]
    bg *= tex_b[..., None]
    tex_g = 1.0 + texture_amp.astype(np.float32)[idx] * (
        _smooth_noise(rng, shape, 2.5) + 0.3 * rng.standard_normal((h, w), dtype=np.float32)
    )
    return bg, green.astype(np.float32)[idx], soil_weight.astype(np.float32)[idx], np.maximum(tex_g, 0.0)


def _clouds(
    rng: np.random.Generator, shape: tuple[int, int], fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cloud optical thickness (0..1), shadow strength (0..1), cloud region and shadow region of one date.

    The cloud region covers ``fraction`` of the tile exactly (quantile threshold of a smooth field with
    fractal detail); thin, unflagged cloud edges surround it.  Shadows are the same field shifted towards
    the sun's opposite direction (north-west for a morning overpass in the northern hemisphere), so they
    may come from clouds outside the tile.
    """
    h, w = shape
    margin = 48
    big = (h + margin, w + margin)
    field = _smooth_noise(rng, big, rng.uniform(8.0, 20.0)) + 0.35 * _smooth_noise(rng, big, 2.0)
    oy, ox = int(rng.integers(margin // 4, margin + 1)), int(rng.integers(0, margin // 2 + 1))
    cloud_f = field[:h, :w]
    shadow_f = field[oy : oy + h, ox : ox + w]
    n_cloud = round(float(fraction) * h * w)
    if n_cloud <= 0:
        threshold = float(cloud_f.max()) + 1e-3
    else:
        flat = cloud_f.ravel()
        threshold = float(np.partition(flat, flat.size - n_cloud)[flat.size - n_cloud])
    region = cloud_f >= threshold
    core = np.clip((cloud_f - threshold) / 0.8, 0.0, 1.0)
    halo = 0.15 * np.clip(1.0 - (threshold - cloud_f) / 0.15, 0.0, 1.0)  # thin edges, below detection
    thickness = np.where(region, 0.35 + 0.65 * np.sqrt(core), halo)
    shadow_region = (shadow_f >= threshold) & ~region
    shadow = np.where(~region, np.clip((shadow_f - threshold + 0.1) / 0.3, 0.0, 1.0), 0.0)
    return thickness.astype(np.float32), shadow.astype(np.float32), region, shadow_region


def _swath_edge(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Data mask of a date at the swath edge: a straight edge slanted 10-35 degrees from north."""
    h, w = shape
    angle = np.deg2rad(rng.uniform(10.0, 35.0)) * rng.choice((-1.0, 1.0))
    yy, xx = np.mgrid[:h, :w]
    across = xx * np.cos(angle) + yy * np.sin(angle)
    lost = rng.uniform(0.1, 0.7)  # share of the tile beyond the swath edge
    if rng.random() < 0.5:
        return across >= np.quantile(across, lost)
    return across <= np.quantile(across, 1.0 - lost)


def simulate_acquisitions(
    scene: Scene, start: datetime.date, end: datetime.date, params: SyntheticParams, key: str
) -> Acquisitions:
    """Render ``scene`` as Sentinel-2 L2A-like acquisitions between ``start`` and ``end`` (inclusive).

    ``key`` should identify the tile and the season (it drives dates, weather and this year's phenology
    shifts); parcel properties that persist across years come from the scene itself.  Where there is no
    data, DN are 0, ``data_mask``/``cloud_mask`` are False and ``cloud_probability`` is 0.
    ``cloud_probability >= 50`` exactly on flagged clouds; ``cloud_mask`` is clouds or their shadows (thin
    cloud edges stay unflagged, as with real cloud detectors).

    The whole stack in memory; :func:`stream_acquisitions` renders the same dates one at a time.
    """
    from lcms_tasks.sources import stack_dates

    dates, rendered = stream_acquisitions(scene, start, end, params, key)
    bands, data_mask, cloud_mask, cloud_probability = stack_dates(
        rendered, len(dates), scene.land_cover.shape, _N_BANDS
    )
    return Acquisitions(
        dates=dates,
        bands=bands,
        data_mask=data_mask,
        cloud_mask=cloud_mask,
        cloud_probability=cloud_probability,
    )


#: One rendered date: bands (H, W, 13) uint16, data mask, cloud mask (H, W) bool, cloud probability uint8.
RenderedDate = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def stream_acquisitions(
    scene: Scene, start: datetime.date, end: datetime.date, params: SyntheticParams, key: str
) -> tuple[list[datetime.date], Iterator[RenderedDate]]:
    """The acquisition dates and an iterator rendering them one by one, in date order.

    Same arguments and the same values as :func:`simulate_acquisitions`, which stacks them; memory is
    that of one date plus the scene's per-pixel layers, whatever the number of dates.  Each yielded
    array is new (the caller may keep it).
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    for name in ("missing_date_fraction", "cloud_cover", "fully_cloudy_fraction", "nodata_edge_fraction"):
        value = getattr(params, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {value}")
    h, w = _check_shape(scene.land_cover.shape)
    rng = _rng(params, key, "acquisitions")
    dates = _acquisition_dates(rng, start, end, params)
    n_dates = len(dates)
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)

    units = _scene_units(scene, params.seed)
    green_u, dry_u, turbidity_u = _vegetation_curves(rng, units, doy)
    background, green_spec, soil_weight, tex_green = _static_layers(rng, units, (h, w))

    # Weather of each date.  Fully cloudy dates count towards the mean cloud cover, so the partial dates
    # aim at the remainder; their cover is Beta-distributed (many clear dates, a few very cloudy ones).
    n_full = round(float(params.fully_cloudy_fraction) * n_dates)
    # short seasons: a fully cloudy date with the probability the expected count gives
    if n_full == 0 and rng.random() < params.fully_cloudy_fraction * n_dates:
        n_full = 1
    full = np.zeros(n_dates, dtype=bool)
    full[rng.choice(n_dates, size=min(n_full, n_dates), replace=False)] = True
    partial_mean = (params.cloud_cover * n_dates - full.sum()) / max(1, n_dates - full.sum())
    partial_mean = float(np.clip(partial_mean, 0.0, 0.95))
    if partial_mean > 0:
        concentration = 1.5
        alpha = max(partial_mean * concentration, 1e-3)
        beta = max((1 - partial_mean) * concentration, 1e-3)
        cover = rng.beta(alpha, beta, n_dates)
    else:
        cover = np.zeros(n_dates)
    cover[full] = 1.0
    edge = np.zeros(n_dates, dtype=bool)
    edge[rng.choice(n_dates, size=round(float(params.nodata_edge_fraction) * n_dates), replace=False)] = True
    # bright surfaces fool cloud detectors a little
    bright = np.isin(scene.land_cover, (_K["built_up"], _K["bare_land"]))
    prob_bias = np.where(bright, 6.0, 0.0).astype(np.float32)
    weather = _Weather(full=full, cover=cover, edge=edge, prob_bias=prob_bias)
    layers = _Layers(units.index, green_u, dry_u, turbidity_u, background, green_spec, soil_weight, tex_green)
    return dates, _render_dates(rng, layers, weather, params, (h, w))


@dataclass
class _Weather:
    full: np.ndarray  # (T,) bool: fully cloudy date
    cover: np.ndarray  # (T,) cloud cover of partial dates
    edge: np.ndarray  # (T,) bool: date at a swath edge
    prob_bias: np.ndarray  # (H, W) float32 cloud-probability bias of bright surfaces


@dataclass
class _Layers:
    index: np.ndarray  # (H, W) unit of each pixel
    green_u: np.ndarray  # (T, U) green fraction per unit
    dry_u: np.ndarray  # (T, U) dry fraction per unit
    turbidity_u: np.ndarray  # (T, U) water turbidity per unit
    background: np.ndarray  # (H, W, 13) background spectrum
    green_spec: np.ndarray  # (H, W, 13) green-vegetation spectrum
    soil_weight: np.ndarray  # (H, W)
    tex_green: np.ndarray  # (H, W)


def _render_dates(
    rng: np.random.Generator, layers: _Layers, weather: _Weather, params: SyntheticParams, shape: tuple[int, int]
) -> Iterator[RenderedDate]:
    h, w = shape
    index = layers.index
    refl = np.empty((h, w, _N_BANDS), dtype=np.float32)
    tmp = np.empty((h, w, _N_BANDS), dtype=np.float32)
    scale = np.float32(S2_QUANTIFICATION)

    for t in range(weather.full.size):
        # surface reflectance: linear mixture of green vegetation, dry vegetation and background
        g = np.minimum(np.take(layers.green_u[t], index) * layers.tex_green, 0.98)
        d = np.minimum(np.take(layers.dry_u[t], index), 1.0 - g)
        moisture = np.float32(rng.uniform(0.85, 1.05))  # wet soil after rain is darker
        s = (1.0 - g - d) * (1.0 + (moisture - 1.0) * layers.soil_weight)
        np.multiply(layers.background, s[..., None], out=refl)
        np.multiply(layers.green_spec, g[..., None], out=tmp)
        refl += tmp
        refl += d[..., None] * _DRY_VEG
        turb = np.take(layers.turbidity_u[t], index)
        refl += turb[..., None] * _TURBIDITY
        # sensor point-spread function (and resampling): boundary pixels become mixtures of both sides
        ndimage.gaussian_filter(refl, sigma=(_PSF_SIGMA, _PSF_SIGMA, 0.0), output=tmp, mode="nearest")
        refl, tmp = tmp, refl
        # atmosphere: residual illumination / correction error and aerosol haze, then sensor noise
        refl *= np.float32(rng.uniform(0.97, 1.03))
        refl += np.float32(rng.uniform(0.0, 0.02)) * _HAZE
        rng.standard_normal((h, w, _N_BANDS), dtype=np.float32, out=tmp)
        tmp *= np.float32(params.noise)
        refl += tmp

        data_mask = np.ones((h, w), dtype=bool)
        cloud_mask = np.zeros((h, w), dtype=bool)
        prob: np.ndarray = weather.prob_bias + rng.uniform(0.0, 10.0, (h, w)).astype(np.float32)
        if weather.full[t]:
            thickness = np.clip(0.8 + 0.15 * _smooth_noise(rng, (h, w), 12.0), 0.6, 1.0)
            refl *= (1.0 - thickness)[..., None]
            refl += thickness[..., None] * (_CLOUD * np.float32(rng.uniform(0.85, 1.3)))
            prob = 70.0 + 30.0 * thickness + rng.normal(0.0, 3.0, (h, w)).astype(np.float32)
            cloud_mask[:] = True
        elif weather.cover[t] > 0:
            thickness, shadow, region, shadow_region = _clouds(rng, (h, w), float(weather.cover[t]))
            refl *= (1.0 - 0.65 * shadow)[..., None]
            refl *= (1.0 - thickness)[..., None]
            refl += thickness[..., None] * (_CLOUD * np.float32(rng.uniform(0.85, 1.3)))
            prob += 200.0 * np.where(region, 0.0, thickness)  # thin edges: raised but below 50
            prob = np.where(
                region,
                np.maximum(55.0 + 45.0 * (thickness - 0.35) / 0.65 + rng.normal(0.0, 4.0, (h, w)), 50.0),
                np.minimum(prob, 45.0),
            )
            cloud_mask = region | shadow_region

        np.multiply(refl, scale, out=refl)
        np.rint(refl, out=refl)
        # 0 is reserved for no data; >1.2 reflectance does not occur over land or cloud tops
        np.clip(refl, 1.0, 12000.0, out=refl)
        bands = refl.astype(np.uint16)
        cloud_probability = np.clip(np.rint(prob), 0, 100).astype(np.uint8)

        if weather.edge[t]:
            valid = _swath_edge(rng, (h, w))
            data_mask = valid
            bands[~valid] = S2_NODATA_DN
            cloud_mask[~valid] = False
            cloud_probability[~valid] = 0
        yield bands, data_mask, cloud_mask, cloud_probability
