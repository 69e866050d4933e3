"""What a published tile folder holds, and reading it back.

A publish tile folder (``<root>/<project>/<season>/publish/<tile>/``) holds one COG per band of
:data:`lcms_tasks.publish.BAND_NAMES` and a completion marker describing it (see
:mod:`lcms_tasks.stages.publish`). This module has the pieces that define its content and are the
same for every tile and season:

* the transition code table of the CHANGE band (:func:`transition_code_table`): the config's relevant
  transitions, sorted by (from id, to id) and numbered 1..N, so a code means the same transition in
  every tile and season of a project (as long as its legend and transitions are unchanged);
* :func:`rasterise_changes`: change polygons burnt into the tile grid as those codes;
* :func:`published_tiles`: the :class:`~lcms_tasks.publish.PublishedTile` of each tile, read from the
  markers, which is what every season-level step (mosaics, STAC, change store, BYOC) works from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import ArtefactMissingError, StageError
from lcms_tasks.publish import BAND_NAMES, BandInfo, PublishedTile

if TYPE_CHECKING:
    import geopandas as gpd
    from affine import Affine

    from lcms_tasks.context import RunContext

NAME = "publish"
#: Codes 1..254 are transitions; 0 is "no change" (and the band's no-data), 255 stays unused.
MAX_TRANSITION_CODES = 254


@dataclass(frozen=True)
class TransitionCode:
    """One value of the CHANGE band: the pixel went from class ``from_id`` to class ``to_id``."""

    code: int
    from_id: int
    to_id: int
    from_name: str
    to_name: str

    @property
    def label(self) -> str:
        return f"{self.from_name} -> {self.to_name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "from": self.from_id,
            "to": self.to_id,
            "from_name": self.from_name,
            "to_name": self.to_name,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransitionCode:
        return cls(int(d["code"]), int(d["from"]), int(d["to"]), str(d["from_name"]), str(d["to_name"]))


def transition_code_table(pairs: Iterable[tuple[int, int]], class_names: Mapping[int, str]) -> list[TransitionCode]:
    """Codes 1..N for the (from, to) ``pairs`` in (from id, to id) order; ``ValueError`` past 254 pairs."""
    ordered = sorted({(int(a), int(b)) for a, b in pairs})
    if len(ordered) > MAX_TRANSITION_CODES:
        raise ValueError(
            f"{len(ordered)} relevant transitions do not fit the uint8 CHANGE band (at most {MAX_TRANSITION_CODES}); "
            "list fewer transitions in stages.change_detection.transitions"
        )
    return [
        TransitionCode(code, a, b, class_names.get(a, str(a)), class_names.get(b, str(b)))
        for code, (a, b) in enumerate(ordered, start=1)
    ]


def rasterise_changes(
    frame: gpd.GeoDataFrame,
    codes: Iterable[TransitionCode],
    shape: tuple[int, int],
    transform: Affine,
    *,
    where: str = "changes",
) -> np.ndarray:
    """(H, W) uint8 CHANGE band: each polygon burnt in as its transition's code, 0 elsewhere.

    Pixels whose centre falls in a polygon take its code (change polygons are traced on the same
    grid, so this gives back their pixels). A polygon whose transition has no code is an error naming
    it: the change table was made with other transitions than the config now lists.
    """
    from rasterio import features

    out = np.zeros(shape, dtype=np.uint8)
    if frame.empty:
        return out
    by_pair = {(c.from_id, c.to_id): c.code for c in codes}
    shapes: list[tuple[Any, int]] = []
    unknown: set[tuple[int, int]] = set()
    for geom, a, b in zip(frame.geometry, frame["from_class"], frame["to_class"], strict=True):
        pair = (int(a), int(b))
        if pair not in by_pair:
            unknown.add(pair)
            continue
        if geom is not None and not geom.is_empty:
            shapes.append((geom, by_pair[pair]))
    if unknown:
        raise StageError(
            f"{where}: transition(s) {sorted(unknown)} (from id, to id) are not among the configured relevant "
            "transitions; run change_detection again with the current config, then publish"
        )
    if shapes:
        features.rasterize(shapes, out_shape=shape, transform=transform, fill=0, out=out, dtype="uint8")
    return out


# -- reading published tiles -----------------------------------------------------------------------


def _band_order(name: str) -> tuple[int, str]:
    """:data:`BAND_NAMES` order first (markers store keys sorted), other bands after, by name."""
    return (BAND_NAMES.index(name), "") if name in BAND_NAMES else (len(BAND_NAMES), name)


def tile_from_marker(uri: str, marker: Mapping[str, Any]) -> PublishedTile:
    """The :class:`PublishedTile` a publish marker describes (``CorruptArtefactError`` if keys are missing)."""
    from lcms_tasks.errors import CorruptArtefactError

    try:
        bands = {
            name: BandInfo(
                name=name,
                file=str(b["file"]),
                dtype=str(b["dtype"]),
                nodata=None if b.get("nodata") is None else int(b["nodata"]),
                description=str(b.get("description", "")),
            )
            for name, b in sorted(marker["bands"].items(), key=lambda kv: _band_order(kv[0]))
        }
        bounds = tuple(float(v) for v in marker["bounds"])
        if len(bounds) != 4:
            raise ValueError(f"bounds has {len(bounds)} values, not 4")
        core = {"tile", "season", "epsg", "bounds", "footprint_wgs84", "bands"}
        return PublishedTile(
            tile_id=str(marker["tile"]),
            season=str(marker["season"]),
            uri=uri,
            epsg=int(marker["epsg"]),
            bounds=(bounds[0], bounds[1], bounds[2], bounds[3]),
            footprint_wgs84=dict(marker["footprint_wgs84"]),
            bands=bands,
            meta={k: v for k, v in marker.items() if k not in core},
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptArtefactError(f"{uri}: the publish marker does not describe a published tile ({err})") from err


def published_tiles(ctx: RunContext, *, season: str | None = None, every_stored: bool = False) -> list[PublishedTile]:
    """The published tiles of the run's tiles (``ctx.tiles()``), read from their markers, in tile order.

    ``ArtefactMissingError`` names the tiles not published. With ``every_stored``: every project tile
    whose publish folder of the season is complete (the season as stored, whichever run published it),
    missing ones skipped.
    """
    season_id = season or ctx.season
    tiles = ctx.project_tiles() if every_stored else ctx.tiles()
    done = ctx.storage.complete_children(ctx.stage_uri(NAME, season=season_id))
    missing = [t.id for t in tiles if t.id not in done]
    if missing and not every_stored:
        raise ArtefactMissingError(
            f"publish (season {season_id}): {len(missing)} of {len(tiles)} tile(s) are not published "
            f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); run `lcms run publish` for them first"
        )
    out = []
    for tile in tiles:
        if tile.id not in done:
            continue
        uri = ctx.tile_uri(NAME, tile.id, season=season_id)
        out.append(tile_from_marker(uri, ctx.storage.read_marker(uri)))
    return out
