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

from lcms_tasks.errors import ArtefactMissingError, CorruptArtefactError

if TYPE_CHECKING:
    import numpy as np
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
    with writing(storage, uri, meta) as writer:
        writer.save(patch)


@contextlib.contextmanager
def writing(storage: Storage, uri: str, meta: dict[str, Any]) -> Iterator[PatchWriter]:
    """Write the EOPatch at ``uri`` piece by piece; published atomically, with ``meta``, on a clean exit.

    ``meta`` is written last, so keys added to it inside the block are kept. On an exception nothing at
    ``uri`` changes.
    """
    with storage.writing_dir(uri, meta) as staging:
        writer = PatchWriter(staging, compress=storage.compress_arrays)
        try:
            yield writer
            writer.finish()
        finally:
            writer.discard()  # open streams of a failed write (the staging folder goes with them)


class PatchWriter:
    """Writes one EOPatch into a staging folder: in-memory features and arrays streamed date by date.

    A streamed array (:meth:`stream`) never exists in memory as a whole: its dates are appended to a
    ``.npy`` file one at a time, which keeps a download's memory to one date however long the season.
    """

    def __init__(self, staging: Path, *, compress: bool) -> None:
        self.staging = staging
        self.compress = compress
        self._streams: dict[str, NpyAppender] = {}
        self._saved: set[str] = set()
        self._mapped: dict[str, tuple[Path, Any]] = {}
        self._stream_dir = staging / ".streams"

    def stream(self, feature: str, item_shape: Sequence[int], dtype: Any) -> NpyAppender:
        """An appender for the temporal array ``feature`` (``"data/BANDS"``-style), one date per append."""
        from eolearn.core import FeatureType

        ftype, name = feature.split("/")
        if not FeatureType(ftype).is_temporal() or not FeatureType(ftype).is_array():
            raise ValueError(f"{feature}: only temporal array features can be streamed")
        self._check_new(feature)
        (self._stream_dir / ftype).mkdir(parents=True, exist_ok=True)
        appender = NpyAppender(self._stream_dir / ftype / f"{name}.npy", item_shape, dtype)
        self._streams[feature] = appender
        return appender

    def array(self, feature: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A writable array for ``feature`` (``"data/FEATURES"``-style) backed by its file in the staging folder.

        Fill it in place (e.g. block of rows by block of rows): its pages go straight to the file, with
        no second in-memory copy to write out at the end. Its initial content is zeros.
        """
        import numpy as np

        self._check_new(feature)
        ftype = feature.split("/")[0]
        (self._stream_dir / ftype).mkdir(parents=True, exist_ok=True)
        path = self._stream_dir / ftype / f"{feature.split('/')[1]}.npy"
        mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        self._mapped[feature] = (path, mapped)
        return mapped

    def _check_new(self, feature: str) -> None:
        if feature in self._streams or feature in self._mapped or feature in self._saved:
            raise ValueError(f"{feature} is already being written (streamed, mapped or saved from the EOPatch)")

    def save(self, patch: EOPatch) -> None:
        """Write every feature of ``patch`` (bbox and timestamps included)."""
        import numpy as np
        from eolearn.core import FeatureType, OverwritePermission

        names = {f"{FeatureType(t).value}/{n}" for t, n in patch.get_features()}
        clash = names & (set(self._streams) | set(self._mapped))
        if clash:
            raise ValueError(f"{sorted(clash)} are streamed or mapped; they cannot also be saved from the EOPatch")
        self._saved |= names
        if self.compress:
            patch.save(str(self.staging), overwrite_permission=OverwritePermission.OVERWRITE_FEATURES)
            return
        arrays = [(ftype, name) for ftype, name in patch.get_features() if ftype.is_array()]
        others = [(ftype, name) for ftype, name in patch.get_features() if not ftype.is_array()]
        # bbox, timestamps and vector features through eo-learn; arrays written directly.
        patch.save(
            str(self.staging),
            features=others,
            save_timestamps=patch.timestamps is not None,
            overwrite_permission=OverwritePermission.OVERWRITE_FEATURES,
        )
        for ftype, name in arrays:
            folder = self.staging / FeatureType(ftype).value
            folder.mkdir(exist_ok=True)
            np.save(folder / f"{name}.npy", patch[ftype, name], allow_pickle=False)

    def discard(self) -> None:
        """Close the streamed arrays' files without finishing them."""
        for appender in self._streams.values():
            appender.discard()
        self._mapped.clear()  # the caller's references keep a mapping alive; the staging folder goes anyway

    def finish(self) -> None:
        """Close the streamed arrays and move them into the EOPatch layout (gzip-compressed if configured)."""
        import gzip
        import shutil

        files: dict[str, Path] = {}
        for feature, appender in self._streams.items():
            appender.close()
            files[feature] = appender.path
        for feature, (path, mapped) in self._mapped.items():
            mapped.flush()
            files[feature] = path
        self._mapped.clear()
        for feature, path in files.items():
            folder = self.staging / feature.split("/")[0]
            folder.mkdir(exist_ok=True)
            target = folder / path.name
            if self.compress:  # eo-learn's compressed layout: the .npy bytes, gzipped (level 1)
                with path.open("rb") as src, gzip.open(f"{target}.gz", "wb", compresslevel=1) as dst:
                    shutil.copyfileobj(src, dst, length=16 * 2**20)
                path.unlink()
            else:
                path.replace(target)
        shutil.rmtree(self._stream_dir, ignore_errors=True)


class NpyAppender:
    """A ``.npy`` file written one leading-axis item at a time; its shape is fixed when it is closed.

    The header is reserved up front and rewritten on :meth:`close` with the number of items appended,
    so the file is a standard ``.npy`` (``numpy.load``, eo-learn and :class:`StoredArray` read it).
    """

    _HEADER_BYTES = 256  # magic + length + header text; room for any 5-D shape of realistic size

    def __init__(self, path: Path, item_shape: Sequence[int], dtype: Any) -> None:
        import numpy as np

        self.path = path
        self.item_shape = tuple(int(s) for s in item_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._fh: Any = path.open("wb")
        self._fh.write(b"\0" * self._HEADER_BYTES)

    def append(self, item: Any) -> None:
        """Append one item of ``item_shape`` (cast to the array's dtype)."""
        import numpy as np

        if self._fh is None:
            raise ValueError(f"{self.path}: already closed")
        item = np.asarray(item)
        if not np.can_cast(item.dtype, self.dtype, casting="safe"):
            raise ValueError(f"{self.path}: item {self.count} is {item.dtype}, which does not fit {self.dtype}")
        array = np.ascontiguousarray(item, dtype=self.dtype)
        if array.shape != self.item_shape:
            raise ValueError(f"{self.path}: item {self.count} has shape {array.shape}, expected {self.item_shape}")
        self._fh.write(array.data)
        self.count += 1

    def discard(self) -> None:
        """Close the file without writing its header (an aborted write)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        """Write the final header; the file then holds a ``(count, *item_shape)`` array."""
        import numpy as np

        if self._fh is None:
            return
        shape = (self.count, *self.item_shape)
        text = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})
        prefix = np.lib.format.magic(1, 0)
        room = self._HEADER_BYTES - len(prefix) - 2
        if len(text) + 1 > room:  # pragma: no cover - only for absurd shapes
            raise ValueError(f"{self.path}: shape {shape} does not fit the reserved .npy header")
        body = (text.ljust(room - 1) + "\n").encode("latin1")
        self._fh.seek(0)
        self._fh.write(prefix + len(body).to_bytes(2, "little") + body)
        self._fh.close()
        self._fh = None


# -- loading ----------------------------------------------------------------------------------------

#: Folders of an EOPatch that hold ``.npy`` / ``.npy.gz`` arrays (eo-learn's array feature types).
_ARRAY_FOLDERS = (
    "data",
    "mask",
    "scalar",
    "label",
    "data_timeless",
    "mask_timeless",
    "scalar_timeless",
    "label_timeless",
)


class CorruptArrayError(CorruptArtefactError):
    """An array file of a complete EOPatch cannot hold what its ``.npy`` header says.

    ``where``: the artefact (URI, or the local folder); ``file``: the file inside it
    (``"data/FEATURES.npy"``); ``problem``: what is wrong, in words.
    """

    def __init__(self, where: str, file: str, problem: str) -> None:
        self.where = where
        self.file = file
        self.problem = problem
        super().__init__(f"{where.rstrip('/')}/{file}: {problem}")


def _read_npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, fortran order, dtype, offset of the data) from an open ``.npy`` stream at its start."""
    import numpy as np

    version = np.lib.format.read_magic(fh)
    # Versions 2.0 and 3.0 share the 4-byte header length; 3.0 only allows UTF-8 in the (ASCII) header text.
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), int(fh.tell())


def _described(shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[int, str]:
    nbytes = dtype.itemsize
    for s in shape:
        nbytes *= s
    return nbytes, f"{shape} {dtype.name} = {nbytes} bytes of data"


def check_npy(path: Path, where: str, file: str) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """Header of the ``.npy`` file at ``path``, checked against the file's size (``CorruptArrayError``).

    Reads the header only (a few hundred bytes): a truncated or padded file is caught before numpy
    or eo-learn read it whole and fail with an unhelpful reshape error.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            shape, fortran, dtype, offset = _read_npy_header(fh)
    except (ValueError, EOFError, SyntaxError) as err:  # bad magic, header cut short, unparsable header text
        raise CorruptArrayError(where, file, f"not a readable .npy file ({size} bytes): {err}") from err
    if not dtype.hasobject:  # pickled objects have no size to check before loading
        nbytes, said = _described(shape, dtype)
        held = size - offset
        if held != nbytes:
            what = "truncated" if held < nbytes else "header does not match the file size"
            raise CorruptArrayError(where, file, f"{what}: header says {said}, the file holds {held}")
    return shape, fortran, dtype, offset


def check_npy_gz(path: Path, where: str, file: str) -> None:
    """Check a gzipped ``.npy`` without decompressing it: its header against the gzip trailer's size.

    Decompresses only the header; the trailer's last 4 bytes hold the uncompressed size (mod 2**32),
    which a file cut short does not end with (``CorruptArrayError``).
    """
    import gzip
    import zlib

    size = path.stat().st_size
    try:
        with gzip.open(path, "rb") as gz:
            shape, _, dtype, offset = _read_npy_header(gz)
    except (OSError, EOFError, ValueError, SyntaxError, zlib.error) as err:
        raise CorruptArrayError(where, file, f"not a readable gzipped .npy file ({size} bytes): {err}") from err
    if dtype.hasobject:
        return
    nbytes, said = _described(shape, dtype)
    expected = (offset + nbytes) % 2**32
    with path.open("rb") as fh:
        fh.seek(-4, 2)
        recorded = int.from_bytes(fh.read(4), "little")
    if recorded != expected:
        raise CorruptArrayError(
            where,
            file,
            f"gzip cut short or corrupt: header says {said}, but the gzip trailer gives an uncompressed size of "
            f"{recorded} bytes, not {expected} (compressed file of {size} bytes)",
        )


def _array_files(path: Path, features: Sequence[str] | None) -> list[tuple[Path, str]]:
    """(local file, name inside the EOPatch) of every stored array among ``features`` (None: all)."""
    if features is None:
        return [
            (f, f"{folder}/{f.name}")
            for folder in _ARRAY_FOLDERS
            if (path / folder).is_dir()
            for f in sorted((path / folder).iterdir())
            if f.name.endswith((".npy", ".npy.gz"))
        ]
    out = []
    for feature in features:
        if feature.split("/")[0] not in _ARRAY_FOLDERS:
            continue
        for suffix in (".npy", ".npy.gz"):
            f = path / f"{feature}{suffix}"
            if f.is_file():
                out.append((f, f"{feature}{suffix}"))
                break
    return out


def check_arrays(path: Path, where: str, features: Sequence[str] | None = None) -> None:
    """Check the stored arrays ``features`` (None: all) of the EOPatch in local folder ``path``.

    Raises ``CorruptArrayError`` for the first file whose header does not match its size; an array
    that is absent is left for the loader to report as missing.
    """
    for file, name in _array_files(path, features):
        if name.endswith(".gz"):
            check_npy_gz(file, where, name)
        else:
            check_npy(file, where, name)


def _load_from(path: Path, uri: str, features: Sequence[str] | None) -> EOPatch:
    """Load ``features`` (``"data/BANDS"``-style names; None: all) of the EOPatch in local folder ``path``.

    ``ArtefactMissingError`` if a feature is absent, ``CorruptArtefactError`` (naming the file and the
    problem) if a file is there but cannot be what it claims.
    """
    import gzip
    import zlib

    from eolearn.core import EOPatch, FeatureType

    wanted: Any = ... if features is None else [(FeatureType(f.split("/")[0]), f.split("/")[1]) for f in features]
    check_arrays(path, uri, features)
    try:
        return EOPatch.load(str(path), features=wanted, lazy_loading=False)
    except (gzip.BadGzipFile, EOFError, zlib.error, ValueError) as err:
        # Past the header checks: a damaged gzip stream (CRC, bad deflate data) or unreadable contents.
        arrays = [name for _, name in _array_files(path, features)]
        which = arrays[0] if len(arrays) == 1 else ", ".join(features) if features else "its features"
        raise CorruptArtefactError(f"{uri}: cannot read {which}: {type(err).__name__}: {err}") from err
    except OSError as err:
        raise ArtefactMissingError(f"cannot load EOPatch at {uri}: {err}") from err


def load(storage: Storage, uri: str, *, features: Sequence[str] | None = None) -> tuple[EOPatch, dict[str, Any]]:
    """Load the EOPatch at ``uri`` (optionally only ``features`` like ``"data/BANDS"``) and its metadata.

    ``CorruptArtefactError`` when an array file is truncated or otherwise not what its header says.
    """
    meta = storage.read_marker(uri)
    with storage.reading_dir(uri) as path:
        patch = _load_from(path, uri, features)
    return patch, meta


class StoredArray:
    """A C-ordered ``(T, H, W, C)`` array in an uncompressed ``.npy`` file, read by blocks of rows.

    Supports what chunked stages need — ``shape``, ``ndim``, ``dtype`` and ``a[dates, rows]`` with
    ``dates`` a slice or an index array and ``rows`` a slice — reading only those bytes, so a stage
    never holds a tile's whole input cube (for a given date the rows of a block are contiguous).
    The header is checked against the file's size on opening (``CorruptArrayError``); ``where`` and
    ``file`` name the array in messages (default: the local folder and file name).
    """

    def __init__(self, path: Path, *, where: str | None = None, file: str | None = None) -> None:
        self.path = path
        self.where = where if where is not None else str(path.parent)
        self.file = file if file is not None else path.name
        shape, fortran, dtype, offset = check_npy(path, self.where, self.file)
        if fortran or len(shape) != 4:
            raise CorruptArrayError(
                self.where, self.file, f"expected a C-ordered 4-D array, got shape {shape} (fortran={fortran})"
            )
        self.offset = offset
        self.shape: tuple[int, ...] = shape
        self.dtype = dtype
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
                    # The size was checked on opening: the file changed underneath the reader.
                    raise CorruptArrayError(
                        self.where, self.file, f"truncated: short read at date {d} ({got} of {view.nbytes} bytes)"
                    )
        return out


@contextlib.contextmanager
def open_rows(
    storage: Storage, uri: str, *, features: Sequence[str], by_rows: Sequence[str]
) -> Iterator[tuple[EOPatch, dict[str, Any], dict[str, Any]]]:
    """Open the EOPatch at ``uri``: ``features`` loaded, ``by_rows`` as :class:`StoredArray` readers.

    A ``by_rows`` array stored compressed (``storage.compress_arrays``) cannot be read by rows and is
    loaded whole instead. Yields (patch, marker metadata, {feature: array or reader}). Every array is
    checked against its file's size first (``CorruptArtefactError``).
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
                arrays[name] = StoredArray(npy, where=uri, file=f"{name}.npy")
            else:  # stored compressed: cannot be read by rows
                arrays[name] = _load_from(path, uri, [name])[FeatureType(ftype), fname]
        yield patch, meta, arrays
