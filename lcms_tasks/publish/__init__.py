"""Publishing a season's results where people and services read them.

Cloud Optimized GeoTIFFs in the Sentinel Hub "Bring Your Own COG" layout (:mod:`.cog`), per-season
mosaics and styles (:mod:`.mosaic`), the STAC catalog (:mod:`.stac`) and BYOC registration
(:mod:`.byoc`). The ``publish`` stage (:mod:`lcms_tasks.stages.publish`) ties them to tiles and
seasons; a published tile is described by :class:`PublishedTile`, read back from the tile folder's
completion marker so every season-level step works from what is actually stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The bands (one COG file each) of every published tile folder, in this order.
BAND_NAMES: tuple[str, ...] = ("CLASS", "CONFIDENCE", "CHANGE")


@dataclass(frozen=True)
class BandInfo:
    """One band of a published tile: its file in the tile folder, data type and no-data value."""

    name: str
    file: str
    dtype: str
    nodata: int | None
    description: str = ""


@dataclass(frozen=True)
class PublishedTile:
    """A tile folder of the publish stage: ``uri`` holds one COG per band (``<BAND>.tiff``)."""

    tile_id: str
    season: str
    uri: str
    epsg: int
    bounds: tuple[float, float, float, float]
    footprint_wgs84: dict[str, Any]
    bands: dict[str, BandInfo]
    meta: dict[str, Any] = field(default_factory=dict)
