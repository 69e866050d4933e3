"""Imagery sources for the download stage.

A source turns (tile, season) into Sentinel-2 digital numbers with data and
cloud masks, either stacked in memory (:class:`SourceAcquisitions`) or date by
date (:class:`StreamedAcquisitions`, so a long season of a large tile never has
to fit in memory at once). The download stage reads both through
``iter_dates()``. The configured source is chosen by ``source.type`` in the
project config, never by editing code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.grid import Tile


class DateSlab(NamedTuple):
    """One acquisition date of a tile."""

    bands: np.ndarray  # (H, W, B) uint16 digital numbers, 0 = no data
    data_mask: np.ndarray  # (H, W) bool
    cloud_mask: np.ndarray  # (H, W) bool
    cloud_probability: np.ndarray  # (H, W) uint8, 0..100


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

    def iter_dates(self) -> Iterator[DateSlab]:
        """The acquisitions date by date (views into the stacks)."""
        for t in range(len(self.dates)):
            yield DateSlab(self.bands[t], self.data_mask[t], self.cloud_mask[t], self.cloud_probability[t])


@dataclass
class StreamedAcquisitions:
    """One tile's acquisitions for a season, delivered one date at a time (read once, in date order)."""

    dates: list[dt.date]
    shape: tuple[int, int]  # (H, W)
    slabs: Iterator[Any]  # yields len(dates) DateSlab-shaped tuples, in date order
    band_names: tuple[str, ...]
    quantification: float
    source_name: str
    truth_rasters: dict[str, np.ndarray] = field(default_factory=dict)
    truth_vectors: dict[str, Any] = field(default_factory=dict)
    _consumed: bool = field(default=False, init=False, repr=False)

    def iter_dates(self) -> Iterator[DateSlab]:
        """The acquisitions date by date; checks each date's shapes and that every date comes."""
        if self._consumed:
            raise RuntimeError(f"{self.source_name} acquisitions were already read (a stream is read once)")
        self._consumed = True
        h, w = self.shape
        expected = {"bands": (h, w, len(self.band_names)), "data_mask": (h, w), "cloud_mask": (h, w)}
        expected["cloud_probability"] = (h, w)
        count = 0
        for item in self.slabs:
            slab = DateSlab(*item)
            if count >= len(self.dates):
                raise RuntimeError(f"{self.source_name} delivered more than its {len(self.dates)} dates")
            for name, want in expected.items():
                got = getattr(slab, name).shape
                if got != want:
                    raise RuntimeError(
                        f"{self.source_name}, date {self.dates[count]}: {name} has shape {got}, expected {want}"
                    )
            count += 1
            yield slab
        if count != len(self.dates):
            raise RuntimeError(f"{self.source_name} delivered {count} of its {len(self.dates)} dates")

    def stacked(self) -> SourceAcquisitions:
        """All dates stacked in memory (small tiles, tests)."""
        bands, data_mask, cloud_mask, probability = stack_dates(
            self.iter_dates(), len(self.dates), self.shape, len(self.band_names)
        )
        return SourceAcquisitions(
            dates=list(self.dates),
            bands=bands,
            data_mask=data_mask,
            cloud_mask=cloud_mask,
            cloud_probability=probability,
            band_names=self.band_names,
            quantification=self.quantification,
            source_name=self.source_name,
            truth_rasters=self.truth_rasters,
            truth_vectors=self.truth_vectors,
        )


def stack_dates(
    slabs: Iterable[Any], n_dates: int, shape: tuple[int, int], n_bands: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack ``n_dates`` DateSlab-shaped tuples into bands (T, H, W, B) uint16 and the (T, H, W) masks."""
    h, w = shape
    bands = np.zeros((n_dates, h, w, n_bands), dtype=np.uint16)
    data_mask = np.zeros((n_dates, h, w), dtype=bool)
    cloud_mask = np.zeros((n_dates, h, w), dtype=bool)
    probability = np.zeros((n_dates, h, w), dtype=np.uint8)
    for t, slab in enumerate(slabs):
        bands[t], data_mask[t], cloud_mask[t], probability[t] = slab
    return bands, data_mask, cloud_mask, probability


#: What a source's ``fetch`` returns: stacked or streamed acquisitions (both have ``iter_dates()``).
Fetched = SourceAcquisitions | StreamedAcquisitions


class ImagerySource(Protocol):
    """What the download stage needs from a source."""

    def fetch(self, tile: Tile, season_id: str, start: dt.date, end: dt.date) -> Fetched: ...


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
