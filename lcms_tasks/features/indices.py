"""Spectral indices of Sentinel-2 reflectance: pure numpy, float32, memory-lean.

:func:`compute_indices` turns a reflectance stack ``(..., n_bands)`` into the six
features of :data:`FEATURE_NAMES`:

* ``NDVI`` = (B08 - B04) / (B08 + B04)  (Rouse et al. 1974)
* ``NDWI`` = (B03 - B08) / (B03 + B08)  (McFeeters 1996, open water > 0)
* ``NDBI`` = (B11 - B08) / (B11 + B08)  (Zha et al. 2003)
* ``TC_BRIGHTNESS``, ``TC_GREENNESS``, ``TC_WETNESS``: tasselled cap
  components with the Sentinel-2 coefficients of

      Nedkov, R. (2017). Orthogonal transformation of segmented images from the
      satellite Sentinel-2. Comptes rendus de l'Académie bulgare des Sciences,
      70(5), 687-692.

  Those coefficients are defined on all 13 MSI bands (B01..B12 with B8A and
  B10) in top-of-atmosphere (L1C) reflectance 0..1. On L2A surface reflectance
  they are an approximation (still a useful, consistent feature for
  classification). L2A products have no B10 (cirrus, used only for the
  atmospheric correction): when it is absent its term is left out — its
  coefficients are below 0.001 and cirrus reflectance below ~0.05, so the
  components change by less than 1e-4.

Invalid inputs propagate: a NaN in a band used by a feature makes that feature
NaN. A normalized difference is also NaN where its denominator is 0 (e.g. both
bands 0, the Sentinel-2 no-data value).

Why chunks: a tile stack such as (70, 500, 500, 13) float32 is ~0.9 GB. Doing
``(b8 - b4) / (b8 + b4)`` on whole strided band slices would create several
full-size temporaries per feature and walk memory with a 52-byte stride. We
instead process blocks of pixels small enough to stay in cache: each block is
transposed once into a contiguous (bands, pixels) buffer, the normalized
differences work on contiguous rows with preallocated scratch buffers, and the
tasselled cap is one small float32 matrix product. Extra memory is a few MB
regardless of input size; the only large allocation is the output itself
(which the caller may provide with ``out=``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np

FEATURE_NAMES: tuple[str, ...] = ("NDVI", "NDWI", "NDBI", "TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS")

#: (numerator-positive band, numerator-negative band) of each normalized difference, in FEATURE_NAMES order.
_NORMALIZED_DIFFERENCES: tuple[tuple[str, str], ...] = (
    ("B08", "B04"),  # NDVI
    ("B03", "B08"),  # NDWI (McFeeters)
    ("B11", "B08"),  # NDBI
)

# Nedkov (2017) Sentinel-2 tasselled cap coefficients per band: (brightness, greenness, wetness).
# fmt: off
_TC_TABLE: tuple[tuple[str, float, float, float], ...] = (
    ("B01", 0.0356, -0.0635, 0.0649),
    ("B02", 0.0822, -0.1128, 0.1363),
    ("B03", 0.1360, -0.1680, 0.2802),
    ("B04", 0.2611, -0.3480, 0.3072),
    ("B05", 0.2964, -0.3303, 0.5288),
    ("B06", 0.3338, 0.0852, 0.1379),
    ("B07", 0.3877, 0.3302, -0.0001),
    ("B08", 0.3895, 0.3165, -0.0807),
    ("B8A", 0.4750, 0.3625, -0.1389),
    ("B09", 0.0949, 0.0467, -0.0302),
    ("B10", 0.0009, -0.0009, 0.0003),
    ("B11", 0.3882, -0.4578, -0.4064),
    ("B12", 0.1366, -0.4064, -0.5602),
)
# fmt: on

#: Tasselled-cap bands that may be absent (L2A has no B10); see the module docstring.
_OPTIONAL_TC_BANDS = frozenset({"B10"})

#: Bands of the tasselled cap, in the column order of :data:`_TC_COEFFICIENTS`.
_TC_BANDS: tuple[str, ...] = tuple(row[0] for row in _TC_TABLE)

#: (3, 13) float32 coefficient matrix; rows: brightness, greenness, wetness.
_TC_COEFFICIENTS = np.array([row[1:] for row in _TC_TABLE], dtype=np.float32).T.copy()
#: The same coefficients in float64 (scaled by a quantification before rounding to float32).
_TC_COEFFICIENTS_F64 = np.array([row[1:] for row in _TC_TABLE], dtype=np.float64).T.copy()

#: Pixels per block: 16384 px x 13 bands x 4 B = 0.85 MB, which keeps the block and its scratch
#: buffers in L2 cache while making per-call numpy overhead negligible.
_BLOCK_PIXELS = 16384


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32 (inputs broadcast together).

    NaN where ``a + b == 0`` or where either input is NaN. For non-negative
    inputs the result lies in [-1, 1]: |a - b| <= a + b holds exactly and
    IEEE rounding is monotone, so float32 rounding cannot push it outside.
    """
    a32 = np.asarray(a, dtype=np.float32)
    b32 = np.asarray(b, dtype=np.float32)
    # Overflow near float32 max only turns the denominator into inf (result 0); NaN/inf inputs are
    # part of the contract, so numpy's floating-point warnings are noise here.
    with np.errstate(over="ignore", invalid="ignore"):
        result = np.subtract(a32, b32)
        denominator = np.add(a32, b32)
    _divide_or_nan(result, denominator, out=result)
    return result


def _divide_or_nan(numerator: np.ndarray, denominator: np.ndarray, out: np.ndarray) -> None:
    """``out = numerator / denominator`` with NaN where the denominator is 0 (no warnings)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(numerator, denominator, out=out)
    # x/0 gives +-inf (or NaN for 0/0); the contract is NaN for every zero denominator.
    np.copyto(out, np.float32(np.nan), where=denominator == 0)


def _band_positions(band_names: Sequence[str], needed: Sequence[str]) -> list[int]:
    names = list(band_names)
    positions = []
    for band in needed:
        if band not in names:
            raise ValueError(f"band {band!r} is required for the spectral indices but missing from band_names {names}")
        positions.append(names.index(band))
    return positions


def _can_flatten_leading(array: np.ndarray) -> bool:
    """Whether ``array.reshape(-1, array.shape[-1])`` is possible without a copy."""
    # Leading axes merge into one when each axis' stride equals the next one's stride times its length
    # (axes of length 1 do not matter). This keeps e.g. ``data[..., :13]`` of a 14-band array copy-free.
    dims = [(n, s) for n, s in zip(array.shape[:-1], array.strides[:-1], strict=True) if n != 1]
    return all(s_outer == s_inner * n_inner for (_, s_outer), (n_inner, s_inner) in itertools.pairwise(dims))


def _flat_pairs(src: np.ndarray, dst: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield matching 2-D (pixels, channels) views of ``src`` and ``dst`` without copying either."""
    if src.ndim <= 2 or (_can_flatten_leading(src) and _can_flatten_leading(dst)):
        n_pixels = int(np.prod(src.shape[:-1], dtype=np.int64))
        yield (
            np.lib.stride_tricks.as_strided(
                src, (n_pixels, src.shape[-1]), (_leading_stride(src), src.strides[-1]), writeable=False
            ),
            np.lib.stride_tricks.as_strided(dst, (n_pixels, dst.shape[-1]), (_leading_stride(dst), dst.strides[-1])),
        )
    else:
        # Rare (oddly sliced inputs): recurse over the first axis until the rest flattens.
        for i in range(src.shape[0]):
            yield from _flat_pairs(src[i], dst[i])


def _leading_stride(array: np.ndarray) -> int:
    """Stride between consecutive pixels once the leading axes are merged (innermost non-unit axis)."""
    for n, s in zip(reversed(array.shape[:-1]), reversed(array.strides[:-1]), strict=True):
        if n != 1:
            return s
    return array.strides[-1] * array.shape[-1] if array.ndim else 0


def compute_indices(
    reflectance: np.ndarray,
    band_names: Sequence[str],
    out: np.ndarray | None = None,
    *,
    quantification: float = 1.0,
) -> np.ndarray:
    """Spectral indices of a reflectance stack (or of digital numbers, see ``quantification``).

    Args:
        reflectance: ``(..., n_bands)`` reflectance 0..1 (float32 preferred; other real dtypes are converted
            block by block). NaN marks invalid values and propagates to the features using that band.
        band_names: names of the last axis of ``reflectance`` (e.g. :data:`lcms_tasks.bands.S2_BANDS`);
            B03, B04, B08, B11 and all 13 bands for the tasselled cap must be present, in any order.
        out: optional preallocated ``(..., 6)`` float32 output (may be a view, e.g. a slice of a larger
            array).
        quantification: the input holds reflectance x ``quantification`` (e.g. Sentinel-2 uint16 digital
            numbers with 10000). Nothing is rescaled: the normalized differences do not depend on the
            scale, and the tasselled cap, being linear, uses its coefficients divided by
            ``quantification``. A digital number 0 (no data) gives NaN normalized differences, exactly as
            reflectance 0 does. Default 1: the input is reflectance.

    Returns:
        ``(..., 6)`` float32 in :data:`FEATURE_NAMES` order (``out`` if given).

    Raises:
        ValueError: a needed band is missing (the message names it), or the shapes do not match.
    """
    reflectance = np.asarray(reflectance)
    if reflectance.ndim == 0 or reflectance.shape[-1] != len(band_names):
        raise ValueError(
            f"reflectance last axis ({reflectance.shape[-1:] or 'scalar'}) must match the {len(band_names)} band_names"
        )
    if not (np.isfinite(quantification) and quantification > 0):
        raise ValueError(f"quantification must be a positive finite number, got {quantification}")
    nd_positions = [tuple(_band_positions(band_names, pair)) for pair in _NORMALIZED_DIFFERENCES]
    tc_rows = [i for i, b in enumerate(_TC_BANDS) if b in band_names or b not in _OPTIONAL_TC_BANDS]
    tc_positions = _band_positions(band_names, [_TC_BANDS[i] for i in tc_rows])

    out_shape = (*reflectance.shape[:-1], len(FEATURE_NAMES))
    if out is None:
        out = np.empty(out_shape, dtype=np.float32)
    elif out.shape != out_shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 with shape {out_shape}, got {out.dtype} {out.shape}")
    if reflectance.size == 0:
        return out

    # Only the bands used are copied into the block buffer, in a fixed order: the normalized-difference
    # bands are looked up in it by position.
    used = sorted(set(tc_positions).union(*nd_positions))
    slot = {band: i for i, band in enumerate(used)}
    nd_slots = [(slot[i], slot[j]) for i, j in nd_positions]
    tc_slots = [slot[i] for i in tc_positions]
    # Coefficient matrix laid out for the block buffer's band order: (3, n_used).
    coefficients = np.zeros((3, len(used)), dtype=np.float32)
    if quantification == 1.0:
        coefficients[:, tc_slots] = _TC_COEFFICIENTS[:, tc_rows]
    else:
        # Scaled in float64 from the published coefficients, rounded once to float32.
        coefficients[:, tc_slots] = _TC_COEFFICIENTS_F64[:, tc_rows] / float(quantification)
    used_index = np.asarray(used)
    gather_all = used == list(range(reflectance.shape[-1]))

    block = _BLOCK_PIXELS
    band_buf = np.empty((len(used), block), dtype=np.float32)
    num_buf = np.empty(block, dtype=np.float32)
    den_buf = np.empty(block, dtype=np.float32)
    res_buf = np.empty((len(FEATURE_NAMES), block), dtype=np.float32)

    for src, dst in _flat_pairs(reflectance, out):
        for start in range(0, src.shape[0], block):
            stop = min(start + block, src.shape[0])
            n = stop - start
            bands = band_buf[:, :n]
            chunk = src[start:stop]
            # One transposing copy per block gives contiguous band rows (and converts the dtype).
            np.copyto(bands, (chunk if gather_all else chunk[:, used_index]).T, casting="unsafe")
            res = res_buf[:, :n]
            num, den = num_buf[:n], den_buf[:n]
            # NaN inputs are expected (invalid pixels); their warnings are noise.
            with np.errstate(over="ignore", invalid="ignore"):
                for k, (ia, ib) in enumerate(nd_slots):
                    np.subtract(bands[ia], bands[ib], out=num)
                    np.add(bands[ia], bands[ib], out=den)
                    _divide_or_nan(num, den, out=res[k])
                np.matmul(coefficients, bands, out=res[3:6])
            dst[start:stop] = res.T
    return out
