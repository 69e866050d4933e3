"""Loading a season's change polygons into the change store, in one transaction.

:func:`load_season` reads the change tables (``changes.gpkg``) of a run's tiles and hands them to
:func:`prepare_changes` and :func:`store_changes`:

* **prepare** (pure, in memory): invalid geometries are made valid (``shapely.make_valid``, polygonal
  parts kept) or rejected, and counted; polygons of one transition that share an edge across a tile
  border are dissolved into one change, per UTM zone (confidence area-weighted, tiles merged);
  areas are computed in the UTM zone; rows are put in spatial order (the GiST index fills faster).
* **store** (one transaction on one connection): each chunk of rows gets its stable id (a uuid5 of
  project, seasons, UTM zone, transition and the polygon), is reprojected to EPSG:4326 as a
  MultiPolygon (re-checked there) and encoded for a binary COPY in a thread while the previous chunk
  is being COPYed. Set-based SQL around the COPY replaces the season pair's undecided changes:
  ``detected`` changes of the project and season pair on the loaded tiles (with no decision and no
  link) are deleted; a new detection whose interior overlaps a decided change (confirmed, rejected,
  corrected, or with any decision) of the same project and season pair is recorded in
  ``lcms.detection_links`` instead of being inserted (the rows go through a temporary table for
  this; with no decided change they are COPYed straight into ``lcms.changes``); the others are
  inserted; one ``lcms.loads`` row records the counts. A failure at any point (a killed connection
  included) rolls everything back: the store holds exactly the old state or exactly the new one.
  Loads of the same project and season pair take turns (advisory lock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import logging
import queue
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import ChangeStoreError, StageError, UpstreamMissingError
from lcms_tasks.store.db import SCHEMA, connect, describe, require_schema

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.context import RunContext

log = logging.getLogger(__name__)

#: Namespace of the stable change ids (uuid5).
CHANGE_ID_NAMESPACE = uuid.UUID("7b0c2a51-5b8e-4d0e-9a6f-1c3d5e7f9a20")
#: Rows per COPY statement (bounds the memory of one encoded chunk).
COPY_CHUNK_ROWS = 100_000
#: A polygon whose bounding box lies within this distance (m) of its tile's edge may continue in the next tile.
EDGE_TOLERANCE_M = 1e-6
#: Shared boundary length (m) above which two pieces in neighbouring tiles are one change (a corner is 0).
MIN_SHARED_EDGE_M = 1e-9
#: A step name and a count, reported while storing (rows copied so far, ...).
Progress = Callable[[str, int], None]

_POLYGONAL = {"Polygon", "MultiPolygon"}


@dataclass
class TileChanges:
    """The change table of one tile (``lcms_tasks.changes.read_changes`` columns, the tile's UTM CRS)."""

    tile: str
    frame: gpd.GeoDataFrame
    run_id: str = ""
    upstream_run_ids: tuple[str, ...] = ()
    #: The tile's (min_x, min_y, max_x, max_y) in its CRS; None: every polygon may cross an edge.
    bounds: tuple[float, float, float, float] | None = None


@dataclass
class PreparedChanges:
    """Change rows ready for the store, one entry per change in each array (UTM geometries), and counts."""

    #: "project, season before, season after" as the ids hash it
    key: str = ""
    epsg: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    geom: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # valid, polygonal, UTM
    from_class: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    to_class: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    from_name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    to_name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    area_m2: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))  # NaN: unknown
    tiles: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # tuples of tile ids
    run_id: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    model_run_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # tuples
    n_read: int = 0
    n_fixed: int = 0
    n_rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    n_merged: int = 0  # tile pieces dissolved into a change of another piece
    n_cross_tile: int = 0  # changes made of pieces from more than one tile
    n_duplicates: int = 0  # rows with the id of an earlier row (the same polygon given twice), found when stored

    def __len__(self) -> int:
        return len(self.geom)

    def id_bytes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stable ids of rows ``start:stop`` as (n, 16) bytes (computed on demand: hashing is costly)."""
        sl = slice(start, len(self) if stop is None else stop)
        geoms, epsg = self.geom[sl], self.epsg[sl]
        out = np.zeros((len(geoms), 16), dtype=np.uint8)
        for code in np.unique(epsg).tolist():
            sel = epsg == code
            out[sel] = _change_ids(geoms[sel], self.from_class[sl][sel], self.to_class[sl][sel], self.key, code)
        return out

    @property
    def ids(self) -> list[str]:
        """The changes' ids as strings."""
        return [str(uuid.UUID(bytes=b.tobytes())) for b in self.id_bytes()]

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected_reasons[reason] = self.rejected_reasons.get(reason, 0) + n
        self.n_rejected += n

    def counts(self) -> dict[str, Any]:
        return {
            "read": self.n_read,
            "fixed": self.n_fixed,
            "rejected": self.n_rejected,
            "rejected_reasons": dict(self.rejected_reasons),
            "merged": self.n_merged,
            "cross_tile_changes": self.n_cross_tile,
            "duplicates": self.n_duplicates,
            "changes": len(self),
        }


_ARRAYS = (
    "epsg",
    "geom",
    "from_class",
    "to_class",
    "from_name",
    "to_name",
    "area_m2",
    "confidence",
    "tiles",
    "run_id",
    "model_run_ids",
)


# ------------------------------------------------------------------------------------------- prepare
def _polygonal(geom: Any) -> Any:
    """The polygonal part of ``geom`` (Polygon or MultiPolygon), or None if it has none."""
    import shapely

    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in _POLYGONAL:
        return geom
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in shapely.get_parts(geom) if g.geom_type in _POLYGONAL and not g.is_empty]
        if polys:
            return _polygonal(shapely.union_all(polys))
    return None


def _make_valid(geoms: np.ndarray, out: PreparedChanges) -> tuple[np.ndarray, np.ndarray]:
    """(geometries with the invalid ones repaired, keep mask); rejections and fixes counted in ``out``."""
    import shapely

    keep = np.ones(len(geoms), dtype=bool)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        out.reject("empty geometry", int(missing.sum()))
        keep &= ~missing
    types = shapely.get_type_id(geoms)
    # 3 Polygon, 6 MultiPolygon, 7 GeometryCollection (may hold polygons)
    wrong = keep & ~np.isin(types, (3, 6, 7))
    if wrong.any():
        out.reject("not a polygon", int(wrong.sum()))
        keep &= ~wrong
    invalid = np.zeros(len(geoms), dtype=bool)
    invalid[keep] = ~shapely.is_valid(geoms[keep])
    geoms = geoms.copy()
    for i in np.flatnonzero(invalid | (keep & (types == 7))).tolist():
        fixed = _polygonal(shapely.make_valid(geoms[i]) if invalid[i] else geoms[i])
        if fixed is None or fixed.area <= 0:
            keep[i] = False
            out.reject("invalid, no area left once made valid" if invalid[i] else "no polygon in the collection")
        else:
            geoms[i] = shapely.normalize(fixed)
            out.n_fixed += int(invalid[i])
    return geoms, keep


def _edge_mask(geoms: np.ndarray, part_of: np.ndarray, parts: Sequence[TileChanges]) -> np.ndarray:
    """Polygons touching their tile's edge (the only ones that may continue in a neighbouring tile)."""
    import shapely

    b = shapely.bounds(geoms)
    # a part without bounds: every polygon is a candidate (infinitely small bounds put them all on an edge)
    tile = np.asarray([p.bounds or (np.inf, np.inf, -np.inf, -np.inf) for p in parts], dtype=np.float64)[part_of]
    t = EDGE_TOLERANCE_M
    return (
        (b[:, 0] <= tile[:, 0] + t)
        | (b[:, 1] <= tile[:, 1] + t)
        | (b[:, 2] >= tile[:, 2] - t)
        | (b[:, 3] >= tile[:, 3] - t)
    )


def _components(
    geoms: np.ndarray, tiles: np.ndarray, transition: np.ndarray, candidates: np.ndarray
) -> tuple[int, np.ndarray]:
    """Connected components: edges join candidates of one transition sharing a border in two different tiles."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(geoms)
    idx = np.flatnonzero(candidates)
    pairs_i = np.empty(0, dtype=np.int64)
    pairs_j = np.empty(0, dtype=np.int64)
    if len(idx) > 1 and len(np.unique(tiles[idx])) > 1:
        tree = shapely.STRtree(geoms[idx])
        qi, qj = tree.query(geoms[idx], predicate="intersects")
        i, j = idx[qi], idx[qj]
        ok = (i < j) & (tiles[i] != tiles[j]) & (transition[i] == transition[j])
        i, j = i[ok], j[ok]
        if len(i):
            shared = shapely.length(shapely.intersection(geoms[i], geoms[j])) > MIN_SHARED_EDGE_M
            pairs_i, pairs_j = i[shared], j[shared]
    if not len(pairs_i):
        return n, np.arange(n)
    graph = coo_matrix((np.ones(len(pairs_i), dtype=np.int8), (pairs_i, pairs_j)), shape=(n, n))
    n_comp, labels = connected_components(graph, directed=False)
    return int(n_comp), labels


def _change_ids(geoms: np.ndarray, from_class: np.ndarray, to_class: np.ndarray, key: str, epsg: int) -> np.ndarray:
    """Stable ids, (n, 16) bytes: uuid5 (SHA-1) of the season key, UTM zone, transition and polygon (as WKB)."""
    import shapely

    if not len(geoms):
        return np.zeros((0, 16), dtype=np.uint8)
    # Tile polygons come straight from the polygoniser (deterministic for the same map); dissolved and
    # repaired ones are normalised where they are made, so their vertex order does not depend on input order.
    wkb = shapely.to_wkb(geoms, output_dimension=2, byte_order=1).tolist()
    pair = np.zeros(len(geoms), dtype=[("f", ">i4"), ("t", ">i4")])
    pair["f"], pair["t"] = from_class, to_class
    prefix = CHANGE_ID_NAMESPACE.bytes + f"{key}\x1f{epsg}\x1f".encode()
    digests = b"".join(
        hashlib.sha1(prefix + p + w, usedforsecurity=False).digest()
        for p, w in zip(pair.view("V8").tolist(), wkb, strict=True)
    )
    ids = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 20)[:, :16].copy()
    ids[:, 6] = (ids[:, 6] & 0x0F) | 0x50  # version 5
    ids[:, 8] = (ids[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    return ids


def _epsg_of(part: TileChanges) -> int:
    crs = part.frame.crs
    epsg = crs.to_epsg() if crs is not None else None
    if epsg is None:
        raise StageError(f"change table of tile {part.tile} has no EPSG CRS ({crs!r}); cannot place its polygons")
    return int(epsg)


def _tuple_array(values: Sequence[tuple[str, ...]]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


def prepare_changes(
    parts: Sequence[TileChanges], *, project: str, season_before: str, season_after: str
) -> PreparedChanges:
    """Validate, dissolve across tile edges (per UTM zone), measure and id the tiles' change polygons."""
    import shapely

    key = f"{project}\x1f{season_before}\x1f{season_after}"
    out = PreparedChanges(key=key)
    by_epsg: dict[int, list[int]] = {}
    for k, part in enumerate(parts):
        out.n_read += len(part.frame)
        if len(part.frame):
            by_epsg.setdefault(_epsg_of(part), []).append(k)
    chunks: list[dict[str, np.ndarray]] = []
    for epsg, members in sorted(by_epsg.items()):
        group = [parts[k] for k in members]
        frames = [p.frame for p in group]
        geoms = np.concatenate([np.asarray(f.geometry.values, dtype=object) for f in frames])
        part_of = np.concatenate([np.full(len(f), k, dtype=np.int64) for k, f in enumerate(frames)])
        cols = {
            "from_class": np.concatenate([f["from_class"].to_numpy(dtype=np.int64) for f in frames]),
            "to_class": np.concatenate([f["to_class"].to_numpy(dtype=np.int64) for f in frames]),
            "from_name": np.concatenate([f["from_name"].astype(str).to_numpy(dtype=object) for f in frames]),
            "to_name": np.concatenate([f["to_name"].astype(str).to_numpy(dtype=object) for f in frames]),
            "confidence": np.concatenate([f["confidence"].to_numpy(dtype=np.float64) for f in frames]),
        }
        geoms, keep = _make_valid(geoms, out)
        conf = cols["confidence"]
        bad_conf = keep & np.isfinite(conf) & ((conf < 0) | (conf > 1))
        if bad_conf.any():
            out.reject("confidence outside [0, 1]", int(bad_conf.sum()))
            keep &= ~bad_conf
        sel = np.flatnonzero(keep)
        geoms, part_of = geoms[sel], part_of[sel]
        cols = {name: values[sel] for name, values in cols.items()}
        tile_of_part = np.asarray([p.tile for p in group], dtype=object)
        tile_ids = tile_of_part[part_of]

        area = shapely.area(geoms)
        transition = cols["from_class"] * 65536 + cols["to_class"]
        n_comp, labels = _components(geoms, tile_ids, transition, _edge_mask(geoms, part_of, group))
        sizes = np.bincount(labels, minlength=n_comp)
        first = np.full(n_comp, -1, dtype=np.int64)
        order = np.arange(len(labels))[::-1]
        first[labels[order]] = order  # the first piece of each component carries its attributes
        comp: dict[str, np.ndarray] = {name: values[first] for name, values in cols.items()}
        comp_geoms = geoms[first].copy()
        runs_of_part = [{p.run_id} - {""} for p in group]
        ups_of_part = [set(p.upstream_run_ids) - {""} for p in group]
        run_tuple = _tuple_array([tuple(sorted(r)) for r in runs_of_part])[part_of[first]]
        comp_tiles = _tuple_array([(t,) for t in tile_of_part])[part_of[first]]
        comp_ups = _tuple_array([tuple(sorted(u)) for u in ups_of_part])[part_of[first]]
        for c in np.flatnonzero(sizes > 1).tolist():
            rows = np.flatnonzero(labels == c)
            comp_geoms[c] = shapely.normalize(_polygonal(shapely.union_all(geoms[rows])))
            w, v = area[rows], cols["confidence"][rows]
            finite = np.isfinite(v)
            comp["confidence"][c] = float(np.sum(w[finite] * v[finite]) / np.sum(w[finite])) if finite.any() else np.nan
            members_of = sorted({int(p) for p in part_of[rows]})
            comp_tiles[c] = tuple(sorted({str(t) for t in tile_ids[rows]}))
            run_tuple[c] = tuple(sorted(set().union(*(runs_of_part[p] for p in members_of))))
            comp_ups[c] = tuple(sorted(set().union(*(ups_of_part[p] for p in members_of))))
        out.n_cross_tile += int(np.sum(sizes > 1))
        out.n_merged += int(np.sum(sizes - 1))
        comp_area = shapely.area(comp_geoms)
        good = comp_area > 0
        if (~good).any():
            out.reject("no area", int((~good).sum()))
        chunks.append(
            {
                "epsg": np.full(int(good.sum()), epsg, dtype=np.int64),
                "geom": comp_geoms[good],
                "area_m2": comp_area[good],
                # a change's run: the newest change_detection run of its tiles (ids sort by time)
                "run_id": np.asarray([r[-1] if r else "" for r in run_tuple[good]], dtype=object),
                "tiles": comp_tiles[good],
                "model_run_ids": comp_ups[good],
                **{name: values[good] for name, values in comp.items()},
            }
        )
    if chunks:
        merged = {name: np.concatenate([c[name] for c in chunks]) for name in _ARRAYS}
        order = _spatial_order(merged["geom"], merged["epsg"])
        for name in _ARRAYS:
            setattr(out, name, merged[name][order])
    return out


def _spatial_order(geoms: np.ndarray, epsg: np.ndarray) -> np.ndarray:
    """Row order along a Z-order curve of the polygons' centres, per UTM zone: rows that are near in the
    table are near on the ground, so the GiST index is filled page by page instead of all over."""
    import shapely

    if len(geoms) < 2:
        return np.arange(len(geoms))
    b = shapely.bounds(geoms)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    code: np.ndarray = np.zeros(len(geoms), dtype=np.uint64)
    for values in (cx, cy):
        lo, hi = float(values.min()), float(values.max())
        q = ((values - lo) / ((hi - lo) or 1.0) * 65535).astype(np.uint64)
        spread = np.zeros(len(geoms), dtype=np.uint64)
        for bit in range(16):
            spread |= ((q >> np.uint64(bit)) & np.uint64(1)) << np.uint64(2 * bit)
        code = (code << np.uint64(1)) | spread
    return np.lexsort((code, epsg))


# --------------------------------------------------------------------------------------------- store
#: Columns of a COPY, in the order the encoder writes them: the repeated values first (one shared
#: encoding per combination), then the fixed-width ones (one numpy record per row), the geometry last.
COPY_COLUMNS = (
    "from_name",
    "to_name",
    "tiles",
    "run_id",
    "model_run_ids",
    "id",
    "project",
    "season_before",
    "season_after",
    "datetime",
    "from_class",
    "to_class",
    "area_m2",
    "confidence",
    "geom",
)
_EWKB_MULTIPOLYGON_4326 = 6 | 0x20000000  # EWKB type word: MultiPolygon with an SRID
_WKB_HEADER = 9  # byte order, type, number of parts


class _Encoder:
    """Binary COPY streams of chunks of prepared rows, in EPSG:4326 (reprojected and re-checked here)."""

    def __init__(self, rows: PreparedChanges, constants: bytes) -> None:
        self.rows = rows
        self.constants = constants
        self.transformers: dict[int, Any] = {}
        self.cache: dict[tuple[object, ...], bytes] = {}
        self.n_fixed = 0
        self.n_rejected = 0
        self.n_duplicates = 0
        self.seen: set[bytes] = set()

    def _repeated(self, idx: np.ndarray) -> list[bytes]:
        """Per row: the field count and the repeated fields (names, tiles, run ids), shared per combination."""
        import pandas as pd

        from lcms_tasks.store import pgcopy

        r = self.rows
        columns = [r.from_name[idx], r.to_name[idx], r.tiles[idx], r.run_id[idx], r.model_run_ids[idx]]
        key = np.zeros(len(idx), dtype=np.int64)
        factors = []
        for values in columns:
            codes, levels = pd.factorize(values, sort=False)
            key = key * (len(levels) + 1) + codes
            factors.append((codes, levels))
        combo, _ = pd.factorize(key, sort=False)
        _, first = np.unique(combo, return_index=True)  # combo codes are 0.. in order of first appearance
        head = struct.pack(">h", len(COPY_COLUMNS))
        encoded = np.empty(len(first), dtype=object)
        for j, at in enumerate(first.tolist()):
            values = tuple(levels[codes[at]] for codes, levels in factors)
            enc = self.cache.get(values)
            if enc is None:
                from_name, to_name, tiles, run, upstream = values
                enc = self.cache[values] = b"".join(
                    [
                        head,
                        pgcopy.text(from_name),
                        pgcopy.text(to_name),
                        pgcopy.text_array(tiles),
                        pgcopy.text(run),
                        pgcopy.text_array(upstream),
                    ]
                )
            encoded[j] = enc
        out: list[bytes] = encoded[combo].tolist()
        return out

    def _wgs84(self, geoms: np.ndarray, epsg: np.ndarray) -> np.ndarray:
        import shapely
        from pyproj import Transformer

        out = geoms.copy()
        for code in np.unique(epsg).tolist():
            if code == 4326:
                continue
            sel = epsg == code
            tr = self.transformers.get(code)
            if tr is None:
                tr = self.transformers[code] = Transformer.from_crs(code, 4326, always_xy=True)

            def project(xy: np.ndarray, tr: Any = tr) -> np.ndarray:
                x, y = tr.transform(xy[:, 0], xy[:, 1])
                return np.column_stack([x, y])

            out[sel] = shapely.transform(geoms[sel], project)
        return out

    def encode(self, start: int, stop: int) -> tuple[bytes, int]:
        """(binary COPY stream of rows ``start:stop``, rows in it)."""
        import shapely

        from lcms_tasks.store import pgcopy

        r = self.rows
        sl = slice(start, stop)
        ids = r.id_bytes(start, stop)
        keep = np.ones(len(ids), dtype=bool)
        seen = self.seen
        for i, key in enumerate(ids.view("V16").ravel().tolist()):
            if key in seen:
                keep[i] = False  # the same polygon and transition given twice: stored once
                self.n_duplicates += 1
            else:
                seen.add(key)
        geoms = self._wgs84(r.geom[sl], r.epsg[sl])
        for i in np.flatnonzero(keep & ~shapely.is_valid(geoms)).tolist():  # reprojection can pinch a polygon
            fixed = _polygonal(shapely.make_valid(geoms[i]))
            if fixed is None:
                keep[i] = False
                self.n_rejected += 1
            else:
                geoms[i] = fixed
                self.n_fixed += 1
        ids = ids[keep]
        idx = np.flatnonzero(keep) + start
        geoms = geoms[keep]
        n = len(idx)
        if not n:
            return b"", 0
        # Every geometry as an EWKB MultiPolygon: a fixed header (in the record below), then its polygons' WKB.
        is_poly = shapely.get_type_id(geoms) == 3
        wkb = shapely.to_wkb(geoms, output_dimension=2, byte_order=1)
        n_parts = np.ones(n, dtype=np.int64)
        if (~is_poly).any():
            n_parts[~is_poly] = shapely.get_num_geometries(geoms[~is_poly])
            wkb[~is_poly] = [w[_WKB_HEADER:] for w in wkb[~is_poly].tolist()]
        body: list[bytes] = wkb.tolist()
        conf = r.confidence[idx]
        known = np.isfinite(conf)
        constants = [("constants", f"V{len(self.constants)}")] if self.constants else []
        fields: list[tuple[str, str]] = [
            ("id_len", ">i4"), ("id", "V16"), *constants,
            ("from_len", ">i4"), ("from", ">i4"), ("to_len", ">i4"), ("to", ">i4"),
            ("area_len", ">i4"), ("area", ">f8"), ("conf_len", ">i4"), ("conf", ">f8"),
            ("geom_len", ">i4"), ("byte_order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("parts", "<u4"),
        ]  # fmt: skip
        rec = np.zeros(n, dtype=fields)
        rec["id_len"], rec["id"] = 16, np.ascontiguousarray(ids).view("V16").ravel()
        if self.constants:
            rec["constants"] = np.frombuffer(self.constants, dtype=f"V{len(self.constants)}")[0]
        rec["from_len"], rec["from"] = 4, r.from_class[idx]
        rec["to_len"], rec["to"] = 4, r.to_class[idx]
        rec["area_len"], rec["area"] = 8, r.area_m2[idx]
        rec["conf_len"], rec["conf"] = np.where(known, 8, -1), np.where(known, conf, 0.0)
        rec["geom_len"] = np.asarray([len(b) for b in body]) + 13
        rec["byte_order"], rec["type"], rec["srid"], rec["parts"] = 1, _EWKB_MULTIPOLYGON_4326, 4326, n_parts
        fixed_part = rec.view(f"V{rec.dtype.itemsize}").ravel().tolist()
        if not known.all():  # a NULL confidence is a length of -1 and no value: drop its 8 bytes
            at = rec.dtype.fields["conf"][1] if rec.dtype.fields else 0
            for i in np.flatnonzero(~known).tolist():
                fixed_part[i] = fixed_part[i][:at] + fixed_part[i][at + 8 :]
        stream = b"".join(itertools.chain.from_iterable(zip(self._repeated(idx), fixed_part, body, strict=True)))
        return pgcopy.HEADER + stream + pgcopy.TRAILER, n


def _chunks(encoder: _Encoder, n: int, chunk_rows: int, stop: threading.Event) -> Iterator[tuple[bytes, int, int]]:
    """(stream, rows in it, rows done) per chunk, encoded one chunk ahead in a thread while COPY runs."""
    results: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for start in range(0, n, chunk_rows):
                if stop.is_set():
                    return
                data, count = encoder.encode(start, min(start + chunk_rows, n))
                while not stop.is_set():
                    try:
                        results.put(("chunk", (data, count, min(start + chunk_rows, n))), timeout=0.2)
                        break
                    except queue.Full:
                        continue
            results.put(("end", None))
        except BaseException as err:  # handed to the consumer, which raises it
            results.put(("error", err))

    worker = threading.Thread(target=produce, name="lcms-store-encode", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = results.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=30)


_DECIDED = (
    "(c.status <> 'detected' OR EXISTS (SELECT 1 FROM lcms.decisions d WHERE d.change_id = c.id)"
    " OR EXISTS (SELECT 1 FROM lcms.detection_links l WHERE l.change_id = c.id))"
)
_PAIR = "c.project = %(project)s AND c.season_before = %(before)s AND c.season_after = %(after)s"
_OVERLAPS = (
    "((ST_Intersects(c.geom, t.geom) AND ST_Relate(c.geom, t.geom, 'T********'))"
    " OR (c.corrected_geom IS NOT NULL AND ST_Intersects(c.corrected_geom, t.geom)"
    " AND ST_Relate(c.corrected_geom, t.geom, 'T********')))"
)
_TMP = "_lcms_load"


def store_changes(
    url: str,
    rows: PreparedChanges,
    *,
    project: str,
    season_before: str,
    season_after: str,
    datetime: dt.datetime,
    load_run_id: str,
    scope_tiles: Sequence[str],
    source_run_ids: Sequence[str] = (),
    progress: Progress | None = None,
    chunk_rows: int = COPY_CHUNK_ROWS,
) -> dict[str, Any]:
    """Replace the undecided changes of ``project`` (season pair, ``scope_tiles``) by ``rows``: one transaction.

    Returns ``{"inserted", "replaced", "linked", "kept", "fixed", "rejected", "duplicates"}``: new changes
    inserted, old undecided changes deleted, new detections linked to a decided change instead of
    inserted, decided changes of the season pair (left exactly as they were), the fixed / rejected
    totals (those of ``rows`` plus polygons repaired or dropped after reprojection) and rows given
    twice. :class:`ChangeStoreError` (nothing changed) on any failure.

    A change counts as decided when its status is not ``detected`` or it has a decision or a link
    (a reopened change keeps its audit trail); only undecided ones are ever deleted.

    COPY in binary format, encoded a chunk ahead in a thread. When the season pair has no decided
    change the rows are COPYed straight into ``lcms.changes`` (nothing can collide with them once
    the undecided ones are deleted); otherwise into a temporary table, from which set-based SQL
    links the detections overlapping a decided change and inserts the others.
    """
    import psycopg2

    from lcms_tasks.store import pgcopy

    require_schema(url)
    db = describe(url)
    started = dt.datetime.now(dt.UTC)
    params = {"project": project, "before": season_before, "after": season_after}
    scope = list(dict.fromkeys(scope_tiles))
    constants = b"".join(
        [pgcopy.text(project), pgcopy.text(season_before), pgcopy.text(season_after), pgcopy.timestamptz(datetime)]
    )
    encoder = _Encoder(rows, constants)
    stop = threading.Event()
    conn = connect(url, application_name="lcms-store-load")
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL work_mem = '128MB'")
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"lcms.load\x1f{project}\x1f{season_before}\x1f{season_after}",),
            )
            cur.execute(
                f"DELETE FROM {SCHEMA}.changes c WHERE {_PAIR} AND c.status = 'detected'"
                f" AND c.tiles && %(scope)s::text[] AND NOT {_DECIDED}",
                {**params, "scope": scope},
            )
            replaced = cur.rowcount
            if progress is not None:
                progress("replaced", replaced)
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.changes c WHERE {_PAIR} AND {_DECIDED}", params)
            kept = int(cur.fetchone()[0])
            target = f"{SCHEMA}.changes"
            if kept:
                cur.execute(f"CREATE TEMP TABLE {_TMP} (LIKE {SCHEMA}.changes INCLUDING DEFAULTS) ON COMMIT DROP")
                target = _TMP
            copy_sql = f"COPY {target} ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT binary)"
            copied = 0
            for data, count, done in _chunks(encoder, len(rows), chunk_rows, stop):
                if count:
                    # one read() of the whole chunk: the send then runs without the GIL (the encoder holds it)
                    cur.copy_expert(copy_sql, io.BytesIO(data), size=len(data))
                    copied += count
                if progress is not None:
                    progress("copy", done)
            linked = 0
            inserted = copied
            if kept:
                cur.execute(f"ANALYZE {_TMP}")
                if kept * copied > 20_000_000:  # many decided changes: probe the new rows through an index
                    cur.execute(f"CREATE INDEX ON {_TMP} USING gist (geom)")
                    cur.execute(f"ANALYZE {_TMP}")
                cur.execute(
                    f"CREATE TEMP TABLE _lcms_links ON COMMIT DROP AS SELECT c.id AS change_id, t.id AS detection_id,"
                    " ST_Area(ST_Intersection(COALESCE(c.corrected_geom, c.geom), t.geom)::geography) AS overlap_m2"
                    f" FROM {SCHEMA}.changes c JOIN {_TMP} t ON {_OVERLAPS} WHERE {_PAIR} AND {_DECIDED}",
                    params,
                )
                cur.execute("SELECT count(DISTINCT detection_id) FROM _lcms_links")
                linked = int(cur.fetchone()[0])
                cur.execute(
                    f"INSERT INTO {SCHEMA}.detection_links (change_id, detection_id, run_id, project, season_before,"
                    " season_after, from_class, from_name, to_class, to_name, geom, area_m2, confidence, overlap_m2,"
                    " tiles) SELECT l.change_id, t.id, t.run_id, t.project, t.season_before, t.season_after,"
                    " t.from_class, t.from_name, t.to_class, t.to_name, t.geom, t.area_m2, t.confidence,"
                    f" l.overlap_m2, t.tiles FROM _lcms_links l JOIN {_TMP} t ON t.id = l.detection_id"
                    " ON CONFLICT (change_id, detection_id, run_id) DO NOTHING"
                )
                if progress is not None:
                    progress("linked", linked)
                columns = ", ".join(COPY_COLUMNS)
                cur.execute(
                    f"INSERT INTO {SCHEMA}.changes ({columns}) SELECT {columns} FROM {_TMP} t"
                    " WHERE NOT EXISTS (SELECT 1 FROM _lcms_links l WHERE l.detection_id = t.id)"
                    " ON CONFLICT (id) DO NOTHING"
                )
                inserted = cur.rowcount
            if progress is not None:
                progress("inserted", inserted)
            fixed = rows.n_fixed + encoder.n_fixed
            rejected = rows.n_rejected + encoder.n_rejected
            rows.n_duplicates = encoder.n_duplicates
            cur.execute(
                f"INSERT INTO {SCHEMA}.loads (project, season_before, season_after, run_id, source_run_ids, tiles,"
                " n_read, n_merged, n_inserted, n_replaced, n_linked, n_kept, n_fixed, n_rejected, started_at)"
                " VALUES (%(project)s, %(before)s, %(after)s, %(run)s, %(sources)s, %(tiles)s, %(read)s, %(merged)s,"
                " %(inserted)s, %(replaced)s, %(linked)s, %(kept)s, %(fixed)s, %(rejected)s, %(started)s)",
                {
                    **params,
                    "run": load_run_id,
                    "sources": sorted(set(source_run_ids)),
                    "tiles": scope,
                    "read": rows.n_read,
                    "merged": rows.n_merged,
                    "inserted": inserted,
                    "replaced": replaced,
                    "linked": linked,
                    "kept": kept,
                    "fixed": fixed,
                    "rejected": rejected,
                    "started": started,
                },
            )
        conn.commit()
    except psycopg2.Error as err:
        stop.set()
        _rollback(conn)
        what = f"the load of {project} {season_before} -> {season_after} into {db}"
        if isinstance(err, psycopg2.OperationalError | psycopg2.InterfaceError) or conn.closed:
            raise ChangeStoreError(
                f"the connection was lost during {what}: nothing was changed (a load is one transaction). "
                "Fix: check the server, then load again",
                database=db,
            ) from err
        detail = " ".join(str(err.pgerror or err).split())
        raise ChangeStoreError(f"{what} failed, nothing was changed: {detail}", database=db) from err
    except BaseException:
        stop.set()
        _rollback(conn)
        raise
    finally:
        conn.close()
    return {
        "duplicates": encoder.n_duplicates,
        "inserted": inserted,
        "replaced": replaced,
        "linked": linked,
        "kept": kept,
        "fixed": fixed,
        "rejected": rejected,
    }


def _rollback(conn: Any) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except Exception as err:  # the connection is gone: the server has rolled the transaction back
        log.debug("rollback after a failed load: %s", type(err).__name__)


# ---------------------------------------------------------------------------------------------- season
def read_season(ctx: RunContext) -> tuple[list[TileChanges], str | None]:
    """The change tables of the run's tiles and their before season (None: the project's first season).

    ``UpstreamMissingError`` naming the tiles whose change_detection output is absent; ``StageError``
    when tiles were compared with different before seasons.
    """
    from lcms_tasks.changes import read_changes
    from lcms_tasks.errors import CorruptArtefactError
    from lcms_tasks.stages.change_detection import GPKG_NAME, NAME

    parts: list[TileChanges] = []
    missing: list[str] = []
    befores: dict[str | None, list[str]] = {}
    for tile in ctx.tiles():
        uri = ctx.tile_uri(NAME, tile.id)
        if not ctx.storage.is_complete(uri):
            missing.append(tile.id)
            continue
        meta = ctx.storage.read_marker(uri)
        before = meta.get("season_before")
        befores.setdefault(before, []).append(tile.id)
        with ctx.storage.reading_dir(uri) as folder:
            path = Path(folder) / GPKG_NAME
            if not path.is_file():
                raise CorruptArtefactError(f"{uri}/{GPKG_NAME}: marked complete but the file is absent")
            try:
                frame = read_changes(path)
            except ValueError as err:
                raise CorruptArtefactError(f"{uri}/{GPKG_NAME}: unreadable: {err}") from err
        upstream = meta.get("upstream") or {}
        ups = [str(v) for v in (upstream.values() if isinstance(upstream, dict) else upstream) if v]
        if meta.get("upstream_run_id"):
            ups.append(str(meta["upstream_run_id"]))
        parts.append(
            TileChanges(
                tile=tile.id,
                frame=frame,
                run_id=str(meta.get("run_id") or ""),
                upstream_run_ids=tuple(sorted(set(ups))),
                bounds=tile.bounds,
            )
        )
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise UpstreamMissingError(
            f"change_detection of season {ctx.season} is missing or incomplete for {len(missing)} tile(s) ({shown}); "
            f"run `lcms run change_detection --config CONFIG --season {ctx.season}` first",
            stage="change_detection",
            season=ctx.season,
            tiles=missing,
        )
    named = {b: t for b, t in befores.items() if b}
    if len(named) > 1:
        detail = "; ".join(f"{b}: {', '.join(t[:5])}" for b, t in sorted(named.items()))
        raise StageError(
            f"change_detection of season {ctx.season} compared tiles with different before seasons ({detail}); "
            "run change_detection again on every tile with one before season"
        )
    return parts, next(iter(named), None)


def load_season(url: str, ctx: RunContext, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load the change polygons of ``ctx.tiles()`` for the season pair (before, ``ctx.season``): one transaction.

    Returns the counts: ``read`` (tile polygons), ``fixed`` / ``rejected`` (invalid geometries repaired /
    dropped), ``merged`` (pieces dissolved across tile edges), ``cross_tile_changes``, ``changes``
    (after preparing), ``inserted``, ``replaced`` (old undecided changes removed), ``linked`` (new
    detections linked to a decided change), ``kept`` (decided changes untouched), ``seconds``.
    """
    t0 = time.perf_counter()
    parts, before = read_season(ctx)
    after = ctx.season
    base: dict[str, Any] = {
        "project": ctx.config.project,
        "season_before": before,
        "season_after": after,
        "tiles": len(parts),
        "database": describe(url),
    }
    if before is None:
        log.info("change store: season %s has no before season: nothing to load", after)
        counted = ("read", "changes", "inserted", "replaced", "linked", "kept", "fixed", "rejected", "merged")
        zero = dict.fromkeys(counted, 0)
        return {**base, **zero, "note": f"season {after} has no before season: nothing to load"}
    rows = prepare_changes(parts, project=ctx.config.project, season_before=before, season_after=after)
    start = ctx.config.season(after).start
    stored = store_changes(
        url,
        rows,
        project=ctx.config.project,
        season_before=before,
        season_after=after,
        datetime=dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC),
        load_run_id=ctx.run_id,
        scope_tiles=[p.tile for p in parts],
        source_run_ids=sorted({p.run_id for p in parts if p.run_id}),
        progress=progress,
    )
    out = {**base, **rows.counts(), **stored, "seconds": round(time.perf_counter() - t0, 3)}
    log.info(
        "change store %s: %s %s -> %s: %d read, %d merged across tiles, %d inserted, %d replaced, %d linked to "
        "decided changes, %d fixed, %d rejected",
        out["database"],
        ctx.config.project,
        before,
        after,
        out["read"],
        out["merged"],
        out["inserted"],
        out["replaced"],
        out["linked"],
        out["fixed"],
        out["rejected"],
    )
    return out
