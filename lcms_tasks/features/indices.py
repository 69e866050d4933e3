"""Spectral indices of Sentinel-2 reflectance: pure numpy, float32, memory-lean.

:func:`compute_indices` turns a reflectance stack ``(..., n_bands)`` into features
chosen by name (``features=``; default the six of :data:`FEATURE_NAMES`, the
features stage's default output):

* normalized differences ``(a - b) / (a + b)`` (:data:`NORMALIZED_DIFFERENCES`):

  - ``NDVI`` = (B08, B04)  (Rouse et al. 1974)
  - ``NDWI`` = (B03, B08)  (McFeeters 1996, open water > 0)
  - ``NDBI`` = (B11, B08)  (Zha et al. 2003)
  - red edge: ``NDRE`` = (B08, B05), the red-edge NDVI of Gitelson & Merzlyak (1994) with Sentinel-2's
    NIR; ``NDVI705`` = (B06, B05), its 750/705 nm form (Sims & Gamon 2002)
  - SWIR: ``NDMI`` = (B08, B11) (Gao 1996's NDWI, the moisture index; it is exactly ``-NDBI``, so adding
    both gives a model nothing new), ``NBR`` = (B08, B12) (Key & Benson 2006), ``NDTI`` = (B11, B12)
    (van Deventer et al. 1997, tillage / crop residue)

* ``TC_BRIGHTNESS``, ``TC_GREENNESS``, ``TC_WETNESS``: tasselled cap components with the Sentinel-2
  coefficients of

      Nedkov, R. (2017). Orthogonal transformation of segmented images from the
      satellite Sentinel-2. Comptes rendus de l'Académie bulgare des Sciences,
      70(5), 687-692.

  Those coefficients are defined on all 13 MSI bands (B01..B12 with B8A and
  B10) in top-of-atmosphere (L1C) reflectance 0..1. On L2A surface reflectance
  they are an approximation (still a useful, consistent feature for
  classification). Real extractions often lack some bands; the rule
  (:func:`tasselled_cap_bands`):

  - B02, B03, B04, B05, B06, B07, B08, B11 and B12 are required;
  - the atmospheric bands B01 (aerosols), B09 (water vapour) and B10 (cirrus; L2A has no B10) are left
    out when absent. On the real Slovenia L1C patch (5 dates, 30,300 valid observations) leaving out all
    three keeps each component's correlation with the 13-band one at >= 0.9997 (mean absolute
    difference 0.012 / 0.003 / 0.005 in brightness / greenness / wetness);
  - B8A, when absent, is replaced by B08 (its broad-band twin) rather than left out: its coefficients
    are the largest of the NIR bands, and leaving it out drops greenness' correlation to 0.84, while B08
    in its place keeps 0.99 / 0.98 / 0.99.

  So a model sees the same kind of feature whatever subset of bands a source delivers; a model's
  metadata records the bands it was trained on.

* the bands themselves (``"B02"``, ``"B8A"``, ...): reflectance, i.e. the input divided by
  ``quantification``.

:func:`required_bands` and :func:`computable_features` say which bands a feature needs and which of a
list of features a band set allows.

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
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lcms_tasks.bands import S2_BANDS

#: The features stage's default features (and the order of its output).
FEATURE_NAMES: tuple[str, ...] = ("NDVI", "NDWI", "NDBI", "TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS")

#: Normalized differences: name -> (numerator-positive band, numerator-negative band).
NORMALIZED_DIFFERENCES: dict[str, tuple[str, str]] = {
    "NDVI": ("B08", "B04"),
    "NDWI": ("B03", "B08"),
    "NDBI": ("B11", "B08"),
    "NDRE": ("B08", "B05"),
    "NDVI705": ("B06", "B05"),
    "NDMI": ("B08", "B11"),
    "NBR": ("B08", "B12"),
    "NDTI": ("B11", "B12"),
}

#: The tasselled-cap components, in the row order of :data:`_TC_COEFFICIENTS`.
TASSELLED_CAP: tuple[str, ...] = ("TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS")

#: Every index :func:`compute_indices` knows (the bands themselves are features too).
INDEX_NAMES: tuple[str, ...] = (*NORMALIZED_DIFFERENCES, *TASSELLED_CAP)

#: Every feature name :func:`compute_indices` accepts.
KNOWN_FEATURES: tuple[str, ...] = (*INDEX_NAMES, *S2_BANDS)

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

#: Tasselled-cap bands whose term is left out when they are absent (see the module docstring).
_OPTIONAL_TC_BANDS = frozenset({"B01", "B09", "B10"})

#: Tasselled-cap bands that another band stands in for when they are absent.
_TC_SUBSTITUTES: dict[str, str] = {"B8A": "B08"}

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


def tasselled_cap_bands(band_names: Iterable[str]) -> dict[str, str]:
    """Which band stands for each tasselled-cap band given ``band_names``: ``{tc band: band used}``.

    A band present stands for itself; an absent B8A is replaced by B08; absent B01, B09, B10 are left
    out (not in the result). Raises ``ValueError`` naming a missing required band.
    """
    names = set(band_names)
    used: dict[str, str] = {}
    for band in _TC_BANDS:
        if band in names:
            used[band] = band
        elif band in _TC_SUBSTITUTES and _TC_SUBSTITUTES[band] in names:
            used[band] = _TC_SUBSTITUTES[band]
        elif band not in _OPTIONAL_TC_BANDS:
            raise ValueError(
                f"band {band!r} is required for the tasselled cap but missing from band_names {sorted(names)}"
            )
    return used


def required_bands(feature: str) -> tuple[str, ...]:
    """The bands ``feature`` cannot do without (the tasselled cap: its required bands, see the module docstring)."""
    if feature in NORMALIZED_DIFFERENCES:
        return NORMALIZED_DIFFERENCES[feature]
    if feature in TASSELLED_CAP:
        return tuple(b for b in _TC_BANDS if b not in _OPTIONAL_TC_BANDS and b not in _TC_SUBSTITUTES)
    if feature in S2_BANDS:
        return (feature,)
    raise ValueError(f"unknown feature {feature!r}; known: {', '.join(KNOWN_FEATURES)}")


def computable_features(features: Iterable[str], band_names: Iterable[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``features`` into those ``band_names`` allow and the others: ``(kept, {skipped: missing bands})``."""
    names = set(band_names)
    kept: list[str] = []
    skipped: dict[str, list[str]] = {}
    for feature in features:
        missing = [b for b in required_bands(feature) if b not in names]
        if missing:
            skipped[feature] = missing
        else:
            kept.append(feature)
    return kept, skipped


def check_feature_names(features: Sequence[str]) -> tuple[str, ...]:
    """``features`` as a tuple, or ``ValueError`` naming an unknown or repeated name."""
    unknown = [f for f in features if f not in KNOWN_FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {', '.join(KNOWN_FEATURES)}")
    repeated = sorted({f for f in features if list(features).count(f) > 1})
    if repeated:
        raise ValueError(f"feature(s) {repeated} listed more than once")
    return tuple(features)


def _band_position(names: list[str], band: str, feature: str) -> int:
    if band not in names:
        raise ValueError(f"band {band!r} is required for {feature} but missing from band_names {names}")
    return names.index(band)


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
    features: Sequence[str] = FEATURE_NAMES,
) -> np.ndarray:
    """Spectral indices (and bands) of a reflectance stack (or of digital numbers, see ``quantification``).

    Args:
        reflectance: ``(..., n_bands)`` reflectance 0..1 (float32 preferred; other real dtypes are converted
            block by block). NaN marks invalid values and propagates to the features using that band.
        band_names: names of the last axis of ``reflectance`` (e.g. :data:`lcms_tasks.bands.S2_BANDS`), in any
            order; each feature needs its bands (:func:`required_bands`), the tasselled cap works from the
            bands a source has (see the module docstring).
        out: optional preallocated ``(..., len(features))`` float32 output (may be a view, e.g. a slice of a
            larger array).
        quantification: the input holds reflectance x ``quantification`` (e.g. Sentinel-2 uint16 digital
            numbers with 10000). The normalized differences do not depend on the scale, and the tasselled
            cap, being linear, uses its coefficients divided by ``quantification``; band features are
            divided by it. A digital number 0 (no data) gives NaN normalized differences, exactly as
            reflectance 0 does. Default 1: the input is reflectance.
        features: names from :data:`KNOWN_FEATURES`, in output order (default :data:`FEATURE_NAMES`).

    Returns:
        ``(..., len(features))`` float32 in ``features`` order (``out`` if given).

    Raises:
        ValueError: a needed band is missing (the message names it and the feature), an unknown or
            repeated feature name, or the shapes do not match.
    """
    reflectance = np.asarray(reflectance)
    features = check_feature_names(features)
    if reflectance.ndim == 0 or reflectance.shape[-1] != len(band_names):
        raise ValueError(
            f"reflectance last axis ({reflectance.shape[-1:] or 'scalar'}) must match the {len(band_names)} band_names"
        )
    if not (np.isfinite(quantification) and quantification > 0):
        raise ValueError(f"quantification must be a positive finite number, got {quantification}")
    names = list(band_names)
    # (output position, band position a, band position b) of each normalized difference.
    nd_specs = [
        (
            k,
            _band_position(names, NORMALIZED_DIFFERENCES[f][0], f),
            _band_position(names, NORMALIZED_DIFFERENCES[f][1], f),
        )
        for k, f in enumerate(features)
        if f in NORMALIZED_DIFFERENCES
    ]
    band_specs = [(k, _band_position(names, f, f)) for k, f in enumerate(features) if f in S2_BANDS]
    # (output position, tasselled-cap row) of each requested component.
    tc_specs = [(k, TASSELLED_CAP.index(f)) for k, f in enumerate(features) if f in TASSELLED_CAP]
    tc_used = tasselled_cap_bands(names) if tc_specs else {}
    tc_terms = [(_TC_BANDS.index(tc_band), names.index(band)) for tc_band, band in tc_used.items()]

    out_shape = (*reflectance.shape[:-1], len(features))
    if out is None:
        out = np.empty(out_shape, dtype=np.float32)
    elif out.shape != out_shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 with shape {out_shape}, got {out.dtype} {out.shape}")
    if reflectance.size == 0 or not features:
        return out

    # Only the bands used are copied into the block buffer, in a fixed order: features look them up in it
    # by position.
    used = sorted({p for _, a, b in nd_specs for p in (a, b)} | {p for _, p in band_specs} | {p for _, p in tc_terms})
    slot = {band: i for i, band in enumerate(used)}
    nd_slots = [(k, slot[a], slot[b]) for k, a, b in nd_specs]
    band_slots = [(k, slot[p]) for k, p in band_specs]
    # Coefficient matrix laid out for the block buffer's band order: (3, n_used). A substitute band adds
    # the absent band's coefficients to its own.
    coefficients = np.zeros((3, len(used)), dtype=np.float32)
    if tc_terms:
        table = _TC_COEFFICIENTS_F64 if quantification != 1.0 else _TC_COEFFICIENTS.astype(np.float64)
        summed = np.zeros((3, len(used)), dtype=np.float64)
        for column, position in tc_terms:
            summed[:, slot[position]] += table[:, column]
        # Scaled in float64 from the published coefficients, rounded once to float32.
        coefficients[:] = summed / float(quantification)
    # The three components straight into the result rows when they are requested together in order.
    tc_direct = [r for _, r in tc_specs] == [0, 1, 2] and [k for k, _ in tc_specs] == list(
        range(tc_specs[0][0], tc_specs[0][0] + 3)
    )
    used_index = np.asarray(used)
    gather_all = used == list(range(reflectance.shape[-1]))
    scale = np.float32(quantification)

    block = _BLOCK_PIXELS
    band_buf = np.empty((len(used), block), dtype=np.float32)
    num_buf = np.empty(block, dtype=np.float32)
    den_buf = np.empty(block, dtype=np.float32)
    res_buf = np.empty((len(features), block), dtype=np.float32)
    tc_buf = np.empty((3, block), dtype=np.float32) if tc_specs and not tc_direct else None

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
                for k, ia, ib in nd_slots:
                    np.subtract(bands[ia], bands[ib], out=num)
                    np.add(bands[ia], bands[ib], out=den)
                    _divide_or_nan(num, den, out=res[k])
                if tc_specs:
                    if tc_buf is None:
                        first = tc_specs[0][0]
                        np.matmul(coefficients, bands, out=res[first : first + 3])
                    else:
                        tc = tc_buf[:, :n]
                        np.matmul(coefficients, bands, out=tc)
                        for k, row in tc_specs:
                            res[k] = tc[row]
                for k, i in band_slots:
                    if quantification == 1.0:
                        res[k] = bands[i]
                    else:
                        np.divide(bands[i], scale, out=res[k])
            dst[start:stop] = res.T
    return out
