"""Saving and loading tile EOPatches through :mod:`lcms_tasks.storage`.

An EOPatch is saved into a staging folder and published with its completion
marker, which also carries the stage's metadata (band and feature names,
quality figures, run id), so a reader gets arrays and metadata together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
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


def _load_from(path: Path, uri: str, features: Sequence[str] | None) -> EOPatch:
    """Load ``features`` (``"data/BANDS"``-style names; None: all) of the EOPatch in local folder ``path``."""
    from eolearn.core import EOPatch, FeatureType

    wanted: Any = ... if features is None else [(FeatureType(f.split("/")[0]), f.split("/")[1]) for f in features]
    try:
        return EOPatch.load(str(path), features=wanted, lazy_loading=False)
    except (OSError, ValueError) as err:
        raise ArtefactMissingError(f"cannot load EOPatch at {uri}: {err}") from err


def load(storage: Storage, uri: str, *, features: Sequence[str] | None = None) -> tuple[EOPatch, dict[str, Any]]:
    """Load the EOPatch at ``uri`` (optionally only ``features`` like ``"data/BANDS"``) and its metadata."""
    meta = storage.read_marker(uri)
    with storage.reading_dir(uri) as path:
        patch = _load_from(path, uri, features)
    return patch, meta


class StoredArray:
    """A C-ordered ``(T, H, W, C)`` array in an uncompressed ``.npy`` file, read by blocks of rows.

    Supports what chunked stages need — ``shape``, ``ndim``, ``dtype`` and ``a[dates, rows]`` with
    ``dates`` a slice or an index array and ``rows`` a slice — reading only those bytes, so a stage
    never holds a tile's whole input cube (for a given date the rows of a block are contiguous).
    """

    def __init__(self, path: Path) -> None:
        import numpy as np

        self.path = path
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            self.offset = fh.tell()
        if fortran or len(shape) != 4:
            raise ValueError(f"{path}: expected a C-ordered 4-D array, got shape {shape} (fortran={fortran})")
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 4

    def __getitem__(self, key: tuple[Any, slice]) -> Any:
        import numpy as np

        dates, rows = key
        t, h, w, c = self.shape
        date_idx = np.arange(t)[dates] if isinstance(dates, slice) else np.asarray(dates, dtype=np.int64)
        r0, r1, step = rows.indices(h)
        if step != 1:
            raise ValueError("StoredArray reads contiguous row blocks only (step 1)")
        row_bytes = w * c * self.dtype.itemsize
        out = np.empty((date_idx.size, max(r1 - r0, 0), w, c), dtype=self.dtype)
        with self.path.open("rb", buffering=0) as fh:
            for i, d in enumerate(date_idx):
                fh.seek(self.offset + (int(d) * h + r0) * row_bytes)
                view = memoryview(out[i]).cast("B")
                got = fh.readinto(view)
                if got != view.nbytes:
                    raise OSError(f"{self.path}: short read at date {d} (file truncated?)")
        return out


@contextlib.contextmanager
def open_rows(
    storage: Storage, uri: str, *, features: Sequence[str], by_rows: Sequence[str]
) -> Iterator[tuple[EOPatch, dict[str, Any], dict[str, Any]]]:
    """Open the EOPatch at ``uri``: ``features`` loaded, ``by_rows`` as :class:`StoredArray` readers.

    A ``by_rows`` array stored compressed (``storage.compress_arrays``) cannot be read by rows and is
    loaded whole instead. Yields (patch, marker metadata, {feature: array or reader}).
    """
    from eolearn.core import FeatureType

    meta = storage.read_marker(uri)
    with storage.reading_dir(uri) as path:
        patch = _load_from(path, uri, features)
        arrays: dict[str, Any] = {}
        for name in by_rows:
            npy = path / f"{name}.npy"
            ftype, fname = name.split("/")
            if npy.is_file():
                arrays[name] = StoredArray(npy)
            else:  # stored compressed: cannot be read by rows
                arrays[name] = _load_from(path, uri, [name])[FeatureType(ftype), fname]
        yield patch, meta, arrays
