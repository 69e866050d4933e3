"""The parcel features' defaults: what raised cross-validated macro-F1 on the real French parcels.

Measured with ``lcms parcels evaluate`` on ``../shared/data/worldcereal_france_2022_monthly`` (420 parcels
of 11 classes, 5-fold CV repeated with 6 seeds; the figures are in the README, "Parcel markers"). An
addition was kept when it raised the mean macro-F1 by at least 0.005 (one fold assignment alone moves it
by about 0.02): the interpolated bands beside the features stage's six indices and the red-edge indices
NDRE and NDVI705 were kept; the SWIR indices (NBR, NDTI) and the temporal statistics were not, so they are
available but not defaults. A plain module without imports, so that the command line's help can show the
defaults without loading numpy.
"""

from __future__ import annotations

#: Indices per date by default (computed when the table's bands allow): the features stage's six and the
#: red-edge ones.
DEFAULT_INDICES: tuple[str, ...] = (
    "NDVI",
    "NDWI",
    "NDBI",
    "TC_BRIGHTNESS",
    "TC_GREENNESS",
    "TC_WETNESS",
    "NDRE",
    "NDVI705",
)
#: Temporal statistics by default: none.
DEFAULT_STATISTICS: tuple[str, ...] = ()
