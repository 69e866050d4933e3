"""Imagery sources for the download stage.

A source turns (tile, season) into :class:`SourceAcquisitions`: Sentinel-2
digital numbers with data and cloud masks. The configured source is chosen by
``source.type`` in the project config, never by editing code.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.grid import Tile


@dataclass
class SourceAcquisitions:
    """One tile's acquisitions for a season, as a source delivers them."""

    dates: list[dt.date]
    bands: np.ndarray  # (T, H, W, B) uint16 digital numbers, 0 = no data
    data_mask: np.ndarray  # (T, H, W) bool
    cloud_mask: np.ndarray  # (T, H, W) bool
    cloud_probability: np.ndarray  # (T, H, W) uint8, 0..100
    band_names: tuple[str, ...]
    quantification: float
    source_name: str
    truth_rasters: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (H, W) array
    truth_vectors: dict[str, Any] = field(default_factory=dict)  # name -> GeoDataFrame

    def subset(self, keep: np.ndarray) -> SourceAcquisitions:
        """Only the dates where ``keep`` is True."""
        return replace(
            self,
            dates=[d for d, k in zip(self.dates, keep, strict=True) if k],
            bands=self.bands[keep],
            data_mask=self.data_mask[keep],
            cloud_mask=self.cloud_mask[keep],
            cloud_probability=self.cloud_probability[keep],
        )


class ImagerySource(Protocol):
    """What the download stage needs from a source."""

    def fetch(self, tile: Tile, season_id: str, start: dt.date, end: dt.date) -> SourceAcquisitions: ...


def get_source(config: ProjectConfig) -> ImagerySource:
    """The source the project config selects."""
    kind = config.source.type
    if kind == "synthetic":
        from lcms_tasks.sources.synthetic_source import SyntheticSource

        return SyntheticSource(config)
    if kind == "sentinelhub":
        from lcms_tasks.sources.sentinelhub_source import SentinelHubSource

        return SentinelHubSource(config)
    if kind == "import":
        from lcms_tasks.sources.import_source import ImportSource

        return ImportSource(config)
    raise ValueError(f"unknown source type {kind!r}")  # pragma: no cover - the config schema prevents it
