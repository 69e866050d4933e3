"""The sampling frame of a map: strata of pixels, and a stratified random draw over tiles (pure numpy).

A pixel belongs to the frame when it has a map class of the legend (``CLASS > 0``) and its centre is
inside the AOI. With change strata (the change map of the season exists), each frame pixel is in
exactly one stratum, taken in this order:

1. ``change: <from> -> <to>``: the pixel is in a change polygon of that transition (CHANGE code > 0);
2. ``buffer``: not a change, but within ``buffer_px`` pixels of one (Chebyshev distance: the
   (2·buffer_px + 1)² square around a change pixel, within the tile) — where a map misses changes;
3. the map class: ``<class name>`` of every other pixel.

Without change strata, every pixel's stratum is its map class.

:class:`StratifiedDraw` draws the sample in one pass over the tiles, without knowing the strata sizes
in advance: every frame pixel gets a random key, uniform on [0, 1), and each stratum keeps the pixels
with the smallest keys. For each stratum, the ``n_h`` pixels with the smallest of ``N_h`` independent
uniform keys are a simple random sample without replacement (every set of ``n_h`` pixels is equally
likely), so this is a stratified random sample and every pixel of stratum ``h`` is in it with
probability ``n_h / N_h``. A pixel's key comes from the seed, the tile's name and the pixel's position
only, so the same seed draws the same points whatever the order in which the tiles are read.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Stratum value of a pixel outside the frame (no data, unknown class, outside the AOI).
OUTSIDE = -1
BUFFER = "buffer"


@dataclass(frozen=True)
class Stratum:
    """One stratum: a map class (``class_id``), a change transition (``code``) or the buffer."""

    name: str
    kind: str  # "class", "change" or "buffer"
    class_id: int | None = None
    code: int | None = None


def make_strata(classes: Sequence[tuple[int, str]], transitions: Sequence[tuple[int, str]] | None) -> list[Stratum]:
    """The strata of a design: change strata (``transitions`` = (code, label)), the buffer, then the classes."""
    out: list[Stratum] = []
    if transitions is not None:
        out += [Stratum(f"change: {label}", "change", code=int(code)) for code, label in transitions]
        out.append(Stratum(BUFFER, "buffer"))
    out += [Stratum(str(name), "class", class_id=int(cid)) for cid, name in classes]
    names = [s.name for s in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"stratum name(s) {', '.join(map(repr, repeated))} are used twice (a class named so?)")
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels in every direction (a square window), within its bounds."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    from scipy.ndimage import binary_dilation

    return np.asarray(binary_dilation(mask, structure=np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool)))


def stratum_raster(
    strata: Sequence[Stratum],
    classes: np.ndarray,
    *,
    change: np.ndarray | None = None,
    in_aoi: np.ndarray | None = None,
    buffer_px: int = 0,
) -> np.ndarray:
    """(H, W) int16: the position in ``strata`` of each pixel's stratum, :data:`OUTSIDE` off the frame."""
    out = np.full(classes.shape, OUTSIDE, dtype=np.int16)
    frame = classes > 0
    if in_aoi is not None:
        frame &= in_aoi
    position = {s.class_id: k for k, s in enumerate(strata) if s.kind == "class"}
    for cid, k in position.items():
        out[frame & (classes == cid)] = k
    codes = {s.code: k for k, s in enumerate(strata) if s.kind == "change"}
    if codes and change is not None:
        changed = frame & (change > 0) & (out != OUTSIDE)
        for code, k in codes.items():
            out[changed & (change == code)] = k
        buffer = next(k for k, s in enumerate(strata) if s.kind == "buffer")
        near = _dilate(change > 0, buffer_px) & ~(change > 0) & (out != OUTSIDE)
        out[near] = buffer
    return out


def stratum_counts(raster: np.ndarray, n_strata: int) -> np.ndarray:
    """(H,) int64 number of pixels of each stratum in a :func:`stratum_raster`."""
    inside = raster[raster != OUTSIDE].astype(np.int64)
    return np.bincount(inside, minlength=n_strata).astype(np.int64)


def _tile_rng(seed: int, tile: str) -> np.random.Generator:
    """The generator of ``tile``'s keys: from the seed and the tile's name only (not the order of the tiles)."""
    digest = hashlib.blake2b(tile.encode("utf-8"), digest_size=16).digest()
    return np.random.default_rng([int(seed), *struct.unpack("<4I", digest)])


@dataclass
class _Candidates:
    """The pixels of one stratum with the smallest keys so far (at most the draw's capacity)."""

    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    tiles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    values: dict[str, np.ndarray] = field(default_factory=dict)
    size: int = 0  # N_h: every pixel of the stratum seen, kept or not


class StratifiedDraw:
    """A stratified random sample of pixels drawn in one pass over the tiles (see the module docstring).

    ``capacity``: the most points any stratum will be asked for (:meth:`take` refuses more). Memory is at
    most ``capacity`` candidates per stratum, whatever the number of tiles.
    """

    def __init__(self, capacity: int, seed: int) -> None:
        if capacity < 1:
            raise ValueError(f"the capacity of a draw must be >= 1, got {capacity}")
        if seed < 0:
            raise ValueError(f"the seed of a draw must be >= 0, got {seed}")
        self.capacity = int(capacity)
        self.seed = int(seed)
        self.tiles: list[str] = []
        self._strata: dict[str, _Candidates] = {}

    @property
    def sizes(self) -> dict[str, int]:
        """``N_h``: pixels of each stratum seen so far (strata in order of first appearance)."""
        return {name: c.size for name, c in self._strata.items()}

    def add(
        self,
        tile: str,
        strata: np.ndarray,
        names: Sequence[str],
        values: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Offer one tile's pixels: ``strata`` (H, W) positions in ``names``, :data:`OUTSIDE` off the frame.

        ``values``: (H, W) arrays of the same shape whose value at each drawn pixel :meth:`take` returns
        (the map class, a label...). Each tile is offered once.
        """
        if tile in self.tiles:
            raise ValueError(f"tile {tile!r} is offered twice")
        values = dict(values or {})
        for key, array in values.items():
            if array.shape != strata.shape:
                raise ValueError(f"tile {tile!r}: values {key!r} have shape {array.shape}, the strata {strata.shape}")
        t = len(self.tiles)
        self.tiles.append(tile)
        flat = strata.ravel()
        inside = np.flatnonzero(flat != OUTSIDE)
        if inside.size == 0:
            return
        # One key per pixel of the tile, so a pixel's key depends on its position, not on the other pixels.
        keys = _tile_rng(self.seed, tile).random(flat.size)
        by_stratum = flat[inside].astype(np.int64)
        order = np.argsort(by_stratum, kind="stable")
        ends = np.cumsum(np.bincount(by_stratum, minlength=len(names)))
        width = strata.shape[1]
        for h, name in enumerate(names):
            start = ends[h - 1] if h else 0
            if ends[h] == start:
                continue
            pixels = inside[order[start : ends[h]]]
            cand = self._strata.setdefault(name, _Candidates())
            cand.size += int(pixels.size)
            pixels = self._smallest(pixels, keys[pixels])
            merged_keys = np.concatenate([cand.keys, keys[pixels]])
            keep = self._keep(merged_keys)
            cand.keys = merged_keys[keep]
            cand.tiles = np.concatenate([cand.tiles, np.full(pixels.size, t, np.int32)])[keep]
            cand.rows = np.concatenate([cand.rows, (pixels // width).astype(np.int32)])[keep]
            cand.cols = np.concatenate([cand.cols, (pixels % width).astype(np.int32)])[keep]
            for key, array in values.items():
                old = cand.values.get(key, np.zeros(0, array.dtype))
                cand.values[key] = np.concatenate([old, array.ravel()[pixels]])[keep]

    def _smallest(self, pixels: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The (at most ``capacity``) pixels with the smallest keys."""
        if pixels.size <= self.capacity:
            return pixels
        return pixels[np.argpartition(keys, self.capacity - 1)[: self.capacity]]

    def _keep(self, keys: np.ndarray) -> np.ndarray:
        if keys.size <= self.capacity:
            return np.arange(keys.size)
        return np.sort(np.argpartition(keys, self.capacity - 1)[: self.capacity])

    def take(self, n_h: Mapping[str, int]) -> list[dict[str, Any]]:
        """The drawn points: for each stratum of ``n_h``, its ``n_h`` pixels with the smallest keys.

        One record per point: ``stratum``, ``tile``, ``row``, ``col`` and the ``values`` at the pixel, in the
        order of ``n_h``'s strata, then tile name, row and column (not the order the tiles were offered in).
        """
        out: list[dict[str, Any]] = []
        for name, n in n_h.items():
            n = int(n)
            if n <= 0:
                continue
            cand = self._strata.get(name)
            size = cand.size if cand else 0
            if cand is None or n > size:
                raise ValueError(f"stratum {name!r}: {n} points asked of {size} pixels")
            if n > self.capacity:
                raise ValueError(f"stratum {name!r}: {n} points asked of a draw that keeps {self.capacity} per stratum")
            chosen = np.argsort(cand.keys, kind="stable")[:n]
            records = [
                {
                    "stratum": name,
                    "tile": self.tiles[int(cand.tiles[k])],
                    "row": int(cand.rows[k]),
                    "col": int(cand.cols[k]),
                    **{key: v[k].item() for key, v in cand.values.items()},
                }
                for k in chosen
            ]
            out += sorted(records, key=lambda r: (r["tile"], r["row"], r["col"]))
        return out
