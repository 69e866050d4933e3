"""Sentinel-2 band definitions shared by sources and features."""

from __future__ import annotations

#: The 13 Sentinel-2 MSI bands in the order LCMS stores them (the order of
#: Sentinel Hub's L1C/L2A band lists, B8A after B08).
S2_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)

#: The bands of Sentinel-2 L2A products: all but B10 (cirrus), which only serves the atmospheric correction.
S2_L2A_BANDS: tuple[str, ...] = tuple(b for b in S2_BANDS if b != "B10")

#: Digital numbers are reflectance x 10000 (Sentinel-2 L2A quantification value).
S2_QUANTIFICATION = 10000.0

#: Digital number written where there is no data.
S2_NODATA_DN = 0


def band_index(name: str) -> int:
    """Position of ``name`` in :data:`S2_BANDS` (``ValueError`` naming the band if unknown)."""
    try:
        return S2_BANDS.index(name)
    except ValueError:
        raise ValueError(f"unknown Sentinel-2 band {name!r}; known bands: {', '.join(S2_BANDS)}") from None
