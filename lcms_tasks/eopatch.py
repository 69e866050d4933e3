"""Saving and loading tile EOPatches through :mod:`lcms_tasks.storage`.

An EOPatch is saved into a staging folder and published with its completion
marker, which also carries the stage's metadata (band and feature names,
quality figures, run id), so a reader gets arrays and metadata together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ArtefactMissingError

if TYPE_CHECKING:
    from eolearn.core import EOPatch

    from lcms_tasks.grid import Tile
    from lcms_tasks.storage import Storage


def new_patch(tile: Tile, dates: Sequence[dt.date | dt.datetime]) -> EOPatch:
    """An empty EOPatch with the tile's bbox and the given timestamps."""
    from eolearn.core import EOPatch
    from sentinelhub import CRS, BBox

    stamps = [d if isinstance(d, dt.datetime) else dt.datetime(d.year, d.month, d.day) for d in dates]
    return EOPatch(bbox=BBox(tile.bounds, crs=CRS(tile.epsg)), timestamps=stamps)


def save(storage: Storage, uri: str, patch: EOPatch, *, meta: dict[str, Any]) -> None:
    """Save ``patch`` at ``uri`` atomically, with ``meta`` in the completion marker.

    The layout is eo-learn's (``EOPatch.load`` reads it). Arrays are gzip-compressed, as eo-learn
    does, only when ``storage.compress_arrays``; by default they are plain ``.npy`` files: gzip
    costs more time than the whole computation of most stages, and eo-learn reads both.
    """
    import numpy as np
    from eolearn.core import FeatureType, OverwritePermission

    with storage.writing_dir(uri, meta) as staging:
        if storage.compress_arrays:
            patch.save(str(staging), overwrite_permission=OverwritePermission.OVERWRITE_FEATURES)
            return
        arrays = [(ftype, name) for ftype, name in patch.get_features() if ftype.is_array()]
        others = [(ftype, name) for ftype, name in patch.get_features() if not ftype.is_array()]
        # bbox, timestamps and vector features through eo-learn; arrays written directly.
        patch.save(
            str(staging),
            features=others,
            save_timestamps=patch.timestamps is not None,
            overwrite_permission=OverwritePermission.OVERWRITE_FEATURES,
        )
        for ftype, name in arrays:
            folder = staging / FeatureType(ftype).value
            folder.mkdir(exist_ok=True)
            np.save(folder / f"{name}.npy", patch[ftype, name], allow_pickle=False)


def load(storage: Storage, uri: str, *, features: Sequence[str] | None = None) -> tuple[EOPatch, dict[str, Any]]:
    """Load the EOPatch at ``uri`` (optionally only ``features`` like ``"data/BANDS"``) and its metadata."""
    from eolearn.core import EOPatch, FeatureType

    meta = storage.read_marker(uri)
    wanted: Any = ...
    if features is not None:
        wanted = [(FeatureType(f.split("/")[0]), f.split("/")[1]) for f in features]
    with storage.reading_dir(uri) as path:
        try:
            patch = EOPatch.load(str(path), features=wanted, lazy_loading=False)
        except (OSError, ValueError) as err:
            raise ArtefactMissingError(f"cannot load EOPatch at {uri}: {err}") from err
    return patch, meta
