"""A stratified random sample design over a season's map: strata, allocation, points, export.

:func:`make_design` reads the season's map (:mod:`.maps`) once, tile by tile, and hands each tile to a
:class:`DesignBuilder`, which stratifies its pixels (:mod:`.frame`: map classes, plus change strata and a
buffer stratum when the season has a change map) and offers them to a one-pass stratified random draw
(:class:`~lcms_tasks.accuracy.frame.StratifiedDraw`); at the end it sizes and allocates the sample
(:mod:`.allocation`) and takes the points. The reporting stage drives a builder with the arrays it has
already read. :func:`write_design` exports a design:

``DIR/design.json``
    what was sampled and how: the project, season, map source, tiles, seed, options, the strata
    table (pixels ``N_h``, area, weight ``W_h``, anticipated user's accuracy ``U_h``, ``S_h``,
    sample size ``n_h``, inclusion probability ``π_h = n_h / N_h``), the allocation figures and the
    legend; :mod:`.assess` needs nothing else.
``DIR/points.csv`` and ``DIR/points.gpkg`` (layer ``points``, EPSG:4326)
    one row per point: ``point_id``, ``stratum``, ``map_class``, ``map_class_id``, ``change`` (the
    change map's label, ``no change`` or ``<from> -> <to>``), ``tile``, ``row``, ``col``, ``epsg``,
    ``x``, ``y`` (pixel centre in the tile's CRS), ``lon``, ``lat``, ``inclusion_probability`` and an
    empty ``reference`` column to fill in.
``DIR/points_blind.csv``
    the same points without stratum, map class, change label or inclusion probability: what a
    labeller sees, so the map's label cannot steer the reference label.

The sample size and its allocation are :mod:`.allocation`'s (its docstring has the exact formula):
``n = ceil((Σ_h W_h S_h / S(Ô))²)`` with ``S_h = sqrt(U_h (1 − U_h))``, at least
``min(min_per_stratum, N_h)`` points per stratum, the rest in proportion to ``N_h``.

Point ids are ``P00001``... in a random order (drawn with the same generator), so neither the order
nor the id gives the stratum away. The same map, options and seed give the same files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.accuracy.allocation import allocate, anticipated_oa_se, cochran_sample_size
from lcms_tasks.accuracy.estimate import AccuracyInputError
from lcms_tasks.accuracy.frame import BUFFER, StratifiedDraw, Stratum, make_strata, stratum_raster

if TYPE_CHECKING:
    import pandas as pd

    from lcms_tasks.accuracy.maps import SeasonMap
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.publish.tiles import TransitionCode

log = logging.getLogger(__name__)

DESIGN_FILE = "design.json"
POINTS_CSV = "points.csv"
POINTS_GPKG = "points.gpkg"
BLIND_CSV = "points_blind.csv"
NO_CHANGE = "no change"
#: Columns of points.csv, in order.
POINT_COLUMNS = (
    "point_id",
    "stratum",
    "map_class",
    "map_class_id",
    "change",
    "tile",
    "row",
    "col",
    "epsg",
    "x",
    "y",
    "lon",
    "lat",
    "inclusion_probability",
    "reference",
)
BLIND_COLUMNS = ("point_id", "tile", "row", "col", "epsg", "x", "y", "lon", "lat", "reference")
#: The key of ``expected_ua`` that sets every change stratum at once.
CHANGE_KEY = "change"


@dataclass(frozen=True)
class DesignOptions:
    """How to size and draw the sample (the ``lcms accuracy design`` options)."""

    target_se: float = 0.01
    min_per_stratum: int = 50
    expected_ua: float = 0.85
    #: Per-stratum anticipated user's accuracies: a stratum name, ``change`` (every change stratum) or ``buffer``.
    expected_ua_by_stratum: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    buffer_px: int = 2
    change_strata: bool = True
    sample_size: int | None = None  # a fixed total instead of the one for target_se
    source: str = "auto"

    def ua_for(self, stratum: Stratum) -> float:
        by = self.expected_ua_by_stratum
        if stratum.name in by:
            return float(by[stratum.name])
        if stratum.kind == "change" and CHANGE_KEY in by:
            return float(by[CHANGE_KEY])
        return float(self.expected_ua)


@dataclass
class Design:
    """A drawn design: the strata table, the allocation and the points (a pandas frame)."""

    meta: dict[str, Any]
    points: pd.DataFrame


def _check_options(options: DesignOptions, strata: list[Stratum]) -> None:
    names = {s.name for s in strata} | {CHANGE_KEY, BUFFER}
    unknown = sorted(set(options.expected_ua_by_stratum) - names)
    if unknown:
        raise AccuracyInputError(
            f"--expected-ua names unknown stratum/strata {', '.join(map(repr, unknown))}; strata: "
            f"{', '.join(s.name for s in strata)} (or 'change' for every change stratum)"
        )
    for name, value in [("", options.expected_ua), *options.expected_ua_by_stratum.items()]:
        if not 0 < value <= 1:
            raise AccuracyInputError(f"--expected-ua {name + '=' if name else ''}{value}: must be in (0, 1]")
    if options.min_per_stratum < 0:
        raise AccuracyInputError(f"--min-per-stratum {options.min_per_stratum}: must be >= 0")
    if options.buffer_px < 0:
        raise AccuracyInputError(f"--buffer-px {options.buffer_px}: must be >= 0")
    if options.sample_size is not None and options.sample_size < 1:
        raise AccuracyInputError(f"--sample-size {options.sample_size}: must be >= 1")


def max_sample_size(options: DesignOptions) -> int:
    """The most points any stratum can get under ``options``, whatever the map: the capacity of the draw.

    ``n = ceil((Σ W_h S_h / S(Ô))²) ≤ ceil((max_h S_h / S(Ô))²)`` since the weights sum to 1, a stratum
    gets at most ``n`` (or its minimum, when the minimums alone exceed ``n``), and a fixed
    ``sample_size`` replaces ``n``.
    """
    if options.sample_size is not None:
        n = options.sample_size
    else:
        values = [options.expected_ua, *options.expected_ua_by_stratum.values()]
        s_max = max(float(np.sqrt(u * (1 - u))) for u in values)
        n = max(1, int(np.ceil((s_max / options.target_se) ** 2)))
    return max(int(n), int(options.min_per_stratum), 1)


class DesignBuilder:
    """A design drawn in one pass over a season's map: the caller reads each tile once and offers it.

    :meth:`add_tile` stratifies a tile (:func:`~lcms_tasks.accuracy.frame.stratum_raster`) and offers its
    pixels to a :class:`~lcms_tasks.accuracy.frame.StratifiedDraw`; :meth:`finish` sizes and allocates the
    sample from the strata sizes and takes the points. ``values``: names of extra per-pixel arrays the
    caller passes to :meth:`add_tile` (a label raster...): the points get a column of each.
    """

    def __init__(self, legend: list[tuple[int, str]], options: DesignOptions, *, values: tuple[str, ...] = ()) -> None:
        self.legend = [(int(cid), str(name)) for cid, name in legend]
        self.options = options
        self.values = values
        self.draw = StratifiedDraw(max_sample_size(options), options.seed)
        self.known = np.array(sorted(cid for cid, _ in self.legend))
        self.class_pixels = np.zeros(256, dtype=np.int64)
        self.outside: dict[str, int] = {"no_data": 0, "unknown_class": 0, "outside_aoi": 0}
        self.geo: dict[str, tuple[int, Any]] = {}  # tile id -> (EPSG, affine transform)
        self.resolution: float | None = None
        self.change_labels: list[str] = [NO_CHANGE]  # index 0: no change
        self.transitions: dict[str, TransitionCode] = {}  # change stratum name -> its transition
        self.renumber = False  # the tiles' code tables disagree: number the transitions anew
        self.used_change = False

    def add_tile(
        self,
        tile: Tile,
        classes: np.ndarray,
        *,
        in_aoi: np.ndarray,
        change: np.ndarray | None = None,
        codes: Sequence[TransitionCode] | None = None,
        values: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Offer one tile: its CLASS map, which pixels are in the AOI, its CHANGE codes with their table
        (``None``: no change map for the tile) and the extra ``values`` arrays."""
        if self.resolution is None:
            self.resolution = float(tile.resolution)
        self.geo[tile.id] = (tile.epsg, tile.transform())
        use_change = self.options.change_strata and change is not None and codes is not None
        table = list(codes or [])
        for c in table:
            name = f"change: {c.label}"
            seen = self.transitions.setdefault(name, c)
            self.renumber |= seen.code != c.code
        if len({c.code for c in self.transitions.values()}) < len(self.transitions):
            self.renumber = True
        strata = make_strata(self.legend, [(c.code, c.label) for c in table] if use_change else None)
        self.used_change |= use_change
        raster = stratum_raster(
            strata,
            classes,
            change=change if use_change else None,
            in_aoi=in_aoi,
            buffer_px=self.options.buffer_px if use_change else 0,
        )
        unknown = (classes > 0) & ~np.isin(classes, self.known)
        self.outside["no_data"] += int(np.sum(classes == 0))
        self.outside["unknown_class"] += int(unknown.sum())
        self.outside["outside_aoi"] += int(np.sum((raster < 0) & (classes > 0) & ~unknown))
        self.class_pixels += np.bincount(classes[raster >= 0].astype(np.int64), minlength=256)
        lut = np.zeros(256, dtype=np.int16)
        for c in table:
            label = c.label
            if label not in self.change_labels:
                self.change_labels.append(label)
            lut[c.code] = self.change_labels.index(label)
        no_change = np.zeros(classes.shape, dtype=np.int16)
        arrays = {"map_class_id": classes, "change": lut[change] if change is not None else no_change}
        missing = sorted(set(self.values) - set(values or {}))
        if missing:
            raise ValueError(f"tile {tile.id}: no {', '.join(missing)} array offered")
        arrays.update({k: v for k, v in (values or {}).items() if k in self.values})
        self.draw.add(tile.id, raster, [s.name for s in strata], arrays)

    def _strata(self) -> list[Stratum]:
        """The strata with pixels, in design order: change (by from id, to id), buffer, classes (legend order)."""
        sizes = self.draw.sizes
        transitions = sorted(self.transitions.values(), key=lambda c: (c.from_id, c.to_id))
        if self.renumber:
            from lcms_tasks.publish.tiles import transition_code_table

            names = {c.from_id: c.from_name for c in transitions} | {c.to_id: c.to_name for c in transitions}
            transitions = transition_code_table([(c.from_id, c.to_id) for c in transitions], names)
        self.transitions = {f"change: {c.label}": c for c in transitions}
        every = make_strata(self.legend, [(c.code, c.label) for c in transitions] if self.used_change else None)
        return [s for s in every if sizes.get(s.name, 0) > 0]

    def finish(self, *, project: str, season: str, config: str | None, source: str) -> Design:
        """Allocate the sample over the strata found, take the points and describe the design."""
        import pandas as pd
        from pyproj import Transformer

        options = self.options
        if self.outside["unknown_class"]:
            log.warning(
                "%d mapped pixel(s) have a class id outside the legend: left out of the frame",
                self.outside["unknown_class"],
            )
        strata = self._strata()
        if not strata:
            raise AccuracyInputError(f"season {season}: the map has no pixel with a class inside the AOI to sample")
        sizes = np.array([self.draw.sizes[s.name] for s in strata], dtype=np.int64)
        ua = np.array([options.ua_for(s) for s in strata])
        n_cochran = cochran_sample_size(sizes, ua, options.target_se)
        n_total = options.sample_size or n_cochran
        n_h = allocate(sizes, n_total, options.min_per_stratum)
        records = self.draw.take({s.name: int(n) for s, n in zip(strata, n_h, strict=True)})

        position = {s.name: h for h, s in enumerate(strata)}
        names = dict(self.legend)
        xs = np.zeros(len(records))
        ys = np.zeros(len(records))
        for k, rec in enumerate(records):
            _, tf = self.geo[rec["tile"]]
            xs[k], ys[k] = tf.c + (rec["col"] + 0.5) * tf.a, tf.f + (rec["row"] + 0.5) * tf.e
        epsgs = np.array([self.geo[rec["tile"]][0] for rec in records], dtype=np.int64)
        lons, lats = np.zeros(len(records)), np.zeros(len(records))
        for epsg in np.unique(epsgs):  # one transformer and one call per CRS
            sel = epsgs == epsg
            lons[sel], lats[sel] = Transformer.from_crs(int(epsg), 4326, always_xy=True).transform(xs[sel], ys[sel])
        rows: list[dict[str, Any]] = []
        for k, rec in enumerate(records):
            cid = int(rec["map_class_id"])
            h = position[rec["stratum"]]
            rows.append(
                {
                    "stratum": rec["stratum"],
                    "map_class": names.get(cid, str(cid)),
                    "map_class_id": cid,
                    "change": self.change_labels[int(rec["change"])],
                    "tile": rec["tile"],
                    "row": rec["row"],
                    "col": rec["col"],
                    "epsg": int(epsgs[k]),
                    "x": round(float(xs[k]), 3),
                    "y": round(float(ys[k]), 3),
                    "lon": round(float(lons[k]), 8),
                    "lat": round(float(lats[k]), 8),
                    "inclusion_probability": float(n_h[h] / sizes[h]),
                    "reference": "",
                    **{key: rec[key] for key in self.values},
                }
            )
        # Point ids in a random order (the seed's generator), so neither the order nor the id gives the stratum away.
        order = np.random.default_rng(options.seed).permutation(len(rows))
        width = max(5, len(str(len(rows))))
        points = pd.DataFrame([rows[k] for k in order], columns=[*POINT_COLUMNS[1:], *self.values])
        points.insert(0, "point_id", [f"P{k + 1:0{width}d}" for k in range(len(rows))])

        res = float(self.resolution or 0.0)
        pixel_m2 = res * res
        table = [
            {
                "name": s.name,
                "kind": s.kind,
                "class_id": s.class_id,
                "transition_code": self.transitions[s.name].code if s.kind == "change" else None,
                "pixels": int(sizes[h]),
                "area_ha": float(sizes[h] * pixel_m2 / 1e4),
                "weight": float(sizes[h] / sizes.sum()),
                "expected_ua": float(ua[h]),
                "s": float(np.sqrt(ua[h] * (1 - ua[h]))),
                "n": int(n_h[h]),
                "inclusion_probability": float(n_h[h] / sizes[h]),
            }
            for h, s in enumerate(strata)
        ]
        meta: dict[str, Any] = {
            "kind": "lcms-accuracy-design",
            "version": 1,
            "project": project,
            "season": season,
            "config": config,
            "source": source,
            "tiles": list(self.draw.tiles),
            "resolution_m": res,
            "pixel_area_m2": pixel_m2,
            "frame": "pixels with a legend class whose centre is inside the AOI",
            "outside_frame_pixels": dict(self.outside),
            "change_strata": self.used_change,
            "buffer_px": options.buffer_px if self.used_change else None,
            "options": {
                "target_se": options.target_se,
                "min_per_stratum": options.min_per_stratum,
                "expected_ua": options.expected_ua,
                "expected_ua_by_stratum": dict(options.expected_ua_by_stratum),
                "seed": options.seed,
                "sample_size": options.sample_size,
            },
            "allocation": {
                "formula": "n = ceil((sum_h W_h S_h / target_se)^2), S_h = sqrt(U_h (1 - U_h)); each stratum at "
                "least min(min_per_stratum, N_h), the rest proportional to N_h (iterated), largest remainders to "
                "whole numbers",
                "n_cochran": n_cochran,
                "n_total": int(n_h.sum()),
                "anticipated_overall_accuracy_se": anticipated_oa_se(sizes, ua, n_h),
            },
            "draw": "stratified random: in each stratum the n_h pixels with the smallest uniform random keys, "
            "keyed by seed, tile and pixel",
            "strata": table,
            # The map's own area of each class in the frame (pixel counting), whatever the strata.
            "class_pixels": {name: int(self.class_pixels[cid]) for cid, name in self.legend if self.class_pixels[cid]},
            "legend": [{"id": cid, "name": name} for cid, name in self.legend],
            "transitions": [c.to_dict() for c in self.transitions.values()] if self.used_change else [],
            "points": POINTS_CSV,
        }
        return Design(meta, points)


def make_design(ctx: RunContext, options: DesignOptions, season_map: SeasonMap | None = None) -> Design:
    """Stratify the season's map, allocate and draw the sample (see the module docstring): one read per tile."""
    from lcms_tasks.accuracy.maps import open_season_map

    smap = season_map or open_season_map(ctx, options.source)
    use_change = options.change_strata and smap.codes is not None
    transitions = [(c.code, c.label) for c in smap.codes or []] if use_change else None
    _check_options(options, make_strata(smap.legend, transitions))
    builder = DesignBuilder(smap.legend, options)
    for tile in smap.tiles:
        classes, change = smap.read(tile)
        builder.add_tile(tile, classes, in_aoi=smap.in_aoi(tile), change=change, codes=smap.codes)
    return builder.finish(project=ctx.config.project, season=ctx.season, config=ctx.config_path, source=smap.source)


def write_design(design: Design, out: Path) -> list[Path]:
    """Write design.json, points.csv, points_blind.csv and points.gpkg into ``out``; the paths written."""
    import geopandas as gpd

    from lcms_tasks.storage import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    points = design.points
    paths = [out / DESIGN_FILE, out / POINTS_CSV, out / BLIND_CSV, out / POINTS_GPKG]
    atomic_write_bytes(paths[0], (json.dumps(design.meta, indent=2, allow_nan=False) + "\n").encode())
    atomic_write_bytes(paths[1], points.to_csv(index=False, lineterminator="\n").encode())
    atomic_write_bytes(paths[2], points[list(BLIND_COLUMNS)].to_csv(index=False, lineterminator="\n").encode())
    frame = gpd.GeoDataFrame(points, geometry=gpd.points_from_xy(points["lon"], points["lat"]), crs=4326)
    tmp = out / f".tmp-{POINTS_GPKG}"  # GDAL wants the .gpkg extension
    tmp.unlink(missing_ok=True)
    frame.to_file(tmp, driver="GPKG", layer="points")
    tmp.replace(paths[3])
    return paths


def read_design(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """(design.json, points.csv) of a design folder (``AccuracyInputError`` naming what is missing)."""
    import pandas as pd

    meta_path, points_path = folder / DESIGN_FILE, folder / POINTS_CSV
    for path in (meta_path, points_path):
        if not path.is_file():
            raise AccuracyInputError(
                f"not a sample design folder: {path.name} is missing (write one with `lcms accuracy design`)",
                path=str(folder),
            )
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise AccuracyInputError(f"not a JSON design file ({err})", path=str(meta_path)) from err
    if not isinstance(meta, dict) or meta.get("kind") != "lcms-accuracy-design":
        raise AccuracyInputError("not an LCMS sample design (kind is not 'lcms-accuracy-design')", path=str(meta_path))
    points = pd.read_csv(
        points_path, dtype={"point_id": str, "stratum": str, "map_class": str, "reference": str}, keep_default_na=False
    )
    return meta, points
