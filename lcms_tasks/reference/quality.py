"""Quality report of an ingested reference file against a project: how much, where, which classes, which years.

``lcms reference quality REF.gpkg --config PROJECT.yaml --out-dir DIR [--previous-map M]`` writes
``DIR/quality.json``, ``DIR/quality.html``, ``DIR/class_areas.png`` and ``DIR/density.png``:

* totals per class (polygons, area);
* per tile of the project grid: polygons touching the tile and the area of their parts inside
  it, per class (areas in the tile's CRS); the share of tiles with any reference (spatial spread)
  and a density map (reference area share per tile);
* per AOI region (``aoi.region_column``; one region 'aoi' without it), in the reference's metric
  CRS; regions are made disjoint in their listed order (first listed wins), so
  ``sum(regions) + outside_aoi == total`` per class;
* with a previous map (a reporting ``report.json`` whose ``total.class_areas`` is used, or a
  class raster GDAL reads), each class's share of the reference area against its share of the
  mapped area; classes with ``reference share < under_ratio x map share`` are under-represented;
* the years with data per class (``year`` column; 0 = unknown).

Overlapping reference polygons are each counted (areas are polygon areas, not ground areas).
A reference of which no polygon falls inside the AOI (or that holds no polygon at all) makes
no useful report: :func:`write_quality` logs a warning and raises ``EmptyResultError`` (exit
status 3 of the CLI) unless ``allow_empty`` (``--allow-empty``), which writes the report anyway.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import ConfigError, EmptyResultError
from lcms_tasks.reference.ingest import metric_areas

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.config import LegendClass, ProjectConfig
    from lcms_tasks.grid import Tile

log = logging.getLogger(__name__)

UNDER_RATIO = 0.5


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _class_table(legend: Sequence[LegendClass], ref: gpd.GeoDataFrame) -> list[tuple[int, str, str | None]]:
    """(id, name, colour) of every legend class plus any id the reference holds outside the legend."""
    rows: list[tuple[int, str, str | None]] = [(c.id, c.name, c.color) for c in legend]
    known = {c.id for c in legend}
    extra = sorted(set(ref["class_id"].astype(int)) - known)
    names = dict(zip(ref["class_id"].astype(int), ref["class_name"].astype(str), strict=True))
    rows += [(cid, f"{names.get(cid, '')} (id {cid}, not in the legend)", None) for cid in extra]
    return rows


def tile_statistics(ref: gpd.GeoDataFrame, tiles: Sequence[Tile]) -> list[dict[str, Any]]:
    """Per tile: polygons touching it, reference area inside it (total and per class id), area share."""
    import shapely

    out: dict[str, dict[str, Any]] = {}
    by_epsg: dict[int, list[Tile]] = defaultdict(list)
    for t in tiles:
        by_epsg[t.epsg].append(t)
    classes = ref["class_id"].to_numpy().astype(int)
    for epsg, group in sorted(by_epsg.items()):
        geoms = ref.geometry.to_crs(epsg).to_numpy()
        boxes = np.asarray([shapely.box(*t.bounds) for t in group], dtype=object)
        tree = shapely.STRtree(geoms)
        tile_idx, poly_idx = tree.query(boxes, predicate="intersects")
        inter = shapely.area(shapely.intersection(boxes[tile_idx], geoms[poly_idx])) if tile_idx.size else []
        for t in group:
            out[t.id] = {"tile": t.id, "n_polygons": 0, "area_m2": 0.0, "classes": {}}
        for ti, pi, area in zip(tile_idx.tolist(), poly_idx.tolist(), np.asarray(inter).tolist(), strict=True):
            if area <= 0:
                continue
            row = out[group[ti].id]
            row["n_polygons"] += 1
            row["area_m2"] += area
            cid = str(classes[pi])
            row["classes"][cid] = row["classes"].get(cid, 0.0) + area
    result = []
    for t in tiles:
        row = out[t.id]
        row["share"] = row["area_m2"] / (t.side_m**2)
        row["classes"] = dict(sorted(row["classes"].items(), key=lambda kv: int(kv[0])))
        result.append(row)
    return result


def region_statistics(
    ref: gpd.GeoDataFrame, aoi: gpd.GeoDataFrame, region_column: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Per region (disjoint, first listed wins) and outside the AOI: polygon count and area per class id.

    Computed in the reference's metric CRS. Returns (regions, outside_aoi, crs used).
    """
    import shapely

    crs = _metric_crs(ref, aoi)
    geoms = ref.geometry.to_crs(crs).to_numpy()
    classes = ref["class_id"].to_numpy().astype(int)
    aoi_m = aoi.to_crs(crs)
    names = [str(v) for v in aoi_m[region_column]] if region_column else ["aoi"] * len(aoi_m)
    merged: dict[str, Any] = {}
    for name, geom in zip(names, aoi_m.geometry.to_numpy(), strict=True):
        merged[name] = geom if name not in merged else shapely.union(merged[name], geom)
    taken = None
    regions: list[dict[str, Any]] = []
    for name, geom in merged.items():
        own = geom if taken is None else shapely.difference(geom, taken)
        taken = geom if taken is None else shapely.union(taken, geom)
        areas = shapely.area(shapely.intersection(geoms, own))
        regions.append(_zone_entry(name, areas, classes))
    outside = shapely.area(shapely.difference(geoms, taken)) if taken is not None else shapely.area(geoms)
    return regions, _zone_entry("outside AOI", outside, classes), crs.to_string()


def _metric_crs(ref: gpd.GeoDataFrame, aoi: gpd.GeoDataFrame) -> Any:
    """The reference's CRS if projected, else its UTM zone (the AOI's when the reference is empty)."""
    if ref.crs is not None and ref.crs.is_projected:
        return ref.crs
    return ref.estimate_utm_crs() if len(ref) else aoi.estimate_utm_crs()


def polygons_inside(ref: gpd.GeoDataFrame, aoi: gpd.GeoDataFrame) -> int:
    """How many polygons of ``ref`` share some area with the AOI (touching its edge is not enough)."""
    import shapely

    if len(ref) == 0 or len(aoi) == 0:
        return 0
    crs = _metric_crs(ref, aoi)
    area = shapely.union_all(aoi.to_crs(crs).geometry.to_numpy())
    geoms = ref.geometry.to_crs(crs).to_numpy()
    return int((shapely.area(shapely.intersection(geoms, area)) > 0).sum())


def _bounds_text(frame: gpd.GeoDataFrame) -> str:
    lon0, lat0, lon1, lat1 = (float(v) for v in frame.to_crs(4326).total_bounds)
    return f"longitude {lon0:.4f}..{lon1:.4f}, latitude {lat0:.4f}..{lat1:.4f}"


def _zone_entry(name: str, areas: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    per: dict[str, dict[str, float]] = {}
    hit = areas > 0
    for cid, area in zip(classes[hit].tolist(), areas[hit].tolist(), strict=True):
        row = per.setdefault(str(cid), {"count": 0, "area_m2": 0.0})
        row["count"] += 1
        row["area_m2"] += area
    return {
        "name": name,
        "n_polygons": int(hit.sum()),
        "area_m2": float(areas[hit].sum()),
        "classes": dict(sorted(per.items(), key=lambda kv: int(kv[0]))),
    }


def previous_map_shares(path: Path, legend: Sequence[LegendClass]) -> dict[int, float]:
    """{class id: share of the mapped (non-zero) area} of a previous map.

    ``path``: a reporting ``report.json`` (``total.class_areas`` rows with id and area_km2 or
    pixels) or a class raster (ids = legend ids, 0 = no data).
    """
    if not path.is_file():
        raise ConfigError(f"previous map {path} does not exist")
    totals: dict[int, float] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data["total"]["class_areas"]
            for r in rows:
                cid = int(r["id"])
                if cid != 0:
                    totals[cid] = totals.get(cid, 0.0) + float(r.get("area_km2", r.get("pixels", 0)) or 0)
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"previous map {path}: not a reporting report.json with total.class_areas ({err!r})"
            ) from err
    else:
        import rasterio

        try:
            with rasterio.open(path) as src:
                band = src.read(1)
        except Exception as err:  # rasterio/GDAL errors of every kind
            raise ConfigError(f"cannot read previous map {path}: {err}") from err
        counts = np.bincount(band.ravel().astype(np.int64).clip(0, 255), minlength=256)
        totals = {i: float(counts[i]) for i in np.flatnonzero(counts) if i != 0}
    total = sum(totals.values())
    if total <= 0:
        raise ConfigError(f"previous map {path} has no mapped (non-zero) class area")
    return {cid: v / total for cid, v in totals.items()}


def representation(
    ref_area: Mapping[int, float], map_share: Mapping[int, float], under_ratio: float = UNDER_RATIO
) -> list[dict[str, Any]]:
    """Per class: reference area share vs map share, ratio, and whether it is under-represented."""
    total = sum(ref_area.values())
    rows = []
    for cid in sorted(set(ref_area) | set(map_share)):
        rs = ref_area.get(cid, 0.0) / total if total else 0.0
        ms = float(map_share.get(cid, 0.0))
        ratio = rs / ms if ms > 0 else None
        rows.append(
            {
                "class_id": cid,
                "reference_share": rs,
                "map_share": ms,
                "ratio": ratio,
                "under_represented": bool(ms > 0 and rs < under_ratio * ms),
            }
        )
    return rows


def quality_report(
    ref: gpd.GeoDataFrame,
    cfg: ProjectConfig,
    *,
    legend_name: str | None = None,
    previous_map: Path | None = None,
    under_ratio: float = UNDER_RATIO,
    source: str = "",
) -> dict[str, Any]:
    """The quality figures of ``ref`` (an ingested reference frame) over ``cfg``'s tiles and regions."""
    from lcms_tasks.grid import load_aoi, tiles_for_aoi

    legend = cfg.legend(legend_name)
    aoi = load_aoi(cfg)
    tiles = tiles_for_aoi(aoi, cfg.grid)
    classes = _class_table(legend, ref)
    names = {cid: name for cid, name, _ in classes}
    areas = metric_areas(ref.geometry)
    cls = ref["class_id"].to_numpy().astype(int)
    per_class: list[dict[str, Any]] = []
    for cid, name, color in classes:
        mine = cls == cid
        per_class.append(
            {
                "class_id": cid,
                "class_name": name,
                "color": color,
                "count": int(mine.sum()),
                "area_m2": float(areas[mine].sum()),
            }
        )
    tile_rows = tile_statistics(ref, tiles) if len(ref) else tile_statistics(ref.iloc[:0], tiles)
    regions, outside, region_crs = region_statistics(ref, aoi, cfg.aoi.region_column)
    with_ref = sum(1 for r in tile_rows if r["area_m2"] > 0)
    years: dict[str, dict[str, int]] = {}
    if "year" in ref.columns:
        for cid, year in zip(cls.tolist(), ref["year"].fillna(0).astype(int).tolist(), strict=True):
            by_year = years.setdefault(str(cid), {})
            by_year[str(year)] = by_year.get(str(year), 0) + 1
    report: dict[str, Any] = {
        "source": source,
        "project": cfg.project,
        "legend": legend_name or cfg.classification.legend,
        "n_polygons": len(ref),
        "n_polygons_inside_aoi": polygons_inside(ref, aoi),
        "area_m2": float(areas.sum()),
        "classes": per_class,
        "tiles": tile_rows,
        "spread": {
            "n_tiles": len(tile_rows),
            "tiles_with_reference": with_ref,
            "share_of_tiles_with_reference": with_ref / len(tile_rows) if tile_rows else 0.0,
        },
        "regions": regions,
        "outside_aoi": outside,
        "region_crs": region_crs,
        "years": {str(k): dict(sorted(v.items())) for k, v in sorted(years.items(), key=lambda kv: int(kv[0]))},
        "years_with_data": sorted({int(y) for v in years.values() for y in v if int(y) != 0}),
        "class_names": {str(k): v for k, v in names.items()},
    }
    if previous_map is not None:
        shares = previous_map_shares(previous_map, legend)
        ref_area = {int(row["class_id"]): float(row["area_m2"]) for row in per_class}
        rows = representation(ref_area, shares, under_ratio)
        for row in rows:
            row["class_name"] = names.get(row["class_id"], f"id {row['class_id']}")
        report["previous_map"] = {"file": str(previous_map), "under_ratio": under_ratio, "classes": rows}
        report["under_represented"] = [r["class_name"] for r in rows if r["under_represented"]]
    return report


# -- rendering --------------------------------------------------------------------------------------


def plot_class_areas(report: Mapping[str, Any], path: Path) -> None:
    """Horizontal bars: reference area share per class (and the previous map's share if known)."""
    plt = _pyplot()
    rows = report["classes"]
    total = sum(r["area_m2"] for r in rows) or 1.0
    labels = [str(r["class_name"]) for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.5))
    try:
        colors = [r["color"] or "#cc00cc" for r in rows]
        ax.barh(y - 0.2, [r["area_m2"] / total for r in rows], 0.4, color=colors, edgecolor="#333", label="reference")
        prev = report.get("previous_map")
        if prev:
            share = {r["class_id"]: r["map_share"] for r in prev["classes"]}
            ax.barh(y + 0.2, [share.get(r["class_id"], 0.0) for r in rows], 0.4, color="#bbb", label="previous map")
            ax.legend(loc="lower right")
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlabel("share of area")
        ax.set_title("Reference area per class")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


def plot_density(report: Mapping[str, Any], tiles: Sequence[Tile], aoi: gpd.GeoDataFrame, path: Path) -> None:
    """Map of the project tiles (WGS84) coloured by reference area share, with the AOI outline."""
    import geopandas as gpd
    from matplotlib.colors import Normalize
    from shapely.geometry import box

    plt = _pyplot()
    share = {r["tile"]: r["share"] for r in report["tiles"]}
    fig, ax = plt.subplots(figsize=(7, 6))
    try:
        cmap = plt.get_cmap("viridis")
        norm = Normalize(0.0, max([*share.values(), 1e-9]))
        for epsg in sorted({t.epsg for t in tiles}):
            group = [t for t in tiles if t.epsg == epsg]
            frame = gpd.GeoDataFrame(
                {"share": [share.get(t.id, 0.0) for t in group]},
                geometry=[box(*t.bounds) for t in group],
                crs=epsg,
            ).to_crs(4326)
            for geom, value in zip(frame.geometry, frame["share"], strict=True):
                xs, ys = geom.exterior.xy
                ax.fill(xs, ys, color=cmap(norm(value)) if value > 0 else "#eeeeee", edgecolor="#999", linewidth=0.3)
        for geom in aoi.to_crs(4326).geometry:
            for part in getattr(geom, "geoms", [geom]):
                if part.geom_type == "Polygon":
                    xs, ys = part.exterior.xy
                    ax.plot(xs, ys, color="#c0392b", linewidth=1.0)
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(mappable, ax=ax, label="reference area share of tile")
        ax.set_aspect("equal")
        ax.set_title("Reference density per tile (grey: none)")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


def render_html(report: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """The report page (every string from the data HTML-escaped)."""
    from lcms_tasks.report.html import esc, table

    def num(v: float, d: int = 2) -> str:
        return f"{v:,.{d}f}"

    names = report["class_names"]
    spread = report["spread"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Reference quality {esc(report['source'])}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.l{text-align:left}"
        ".warn{color:#a04000}img{max-width:100%}</style></head><body>",
        f"<h1>Reference quality — {esc(report['source'])}</h1>",
        f"<p>Project {esc(report['project'])}, legend {esc(report['legend'])}: {report['n_polygons']:,} polygons, "
        f"{num(report['area_m2'] / 1e6, 3)} km²; {spread['tiles_with_reference']} of {spread['n_tiles']} tiles "
        f"({100 * spread['share_of_tiles_with_reference']:.1f} %) have reference.</p>",
    ]
    if report.get("under_represented"):
        items = ", ".join(esc(n) for n in report["under_represented"])
        parts.append(f'<p class="warn">Under-represented against the previous map: {items}</p>')
    parts.append(f'<h2>Classes</h2><p><img src="{esc(images["class_areas"])}" alt="class areas"></p>')
    parts.append(
        table(
            ["class", "id", "polygons", "area (ha)"],
            [
                [esc(r["class_name"]), str(r["class_id"]), f"{r['count']:,}", num(r["area_m2"] / 1e4)]
                for r in report["classes"]
            ],
        )
    )
    parts.append(f'<h2>Spatial spread</h2><p><img src="{esc(images["density"])}" alt="density map"></p>')
    tile_rows = [
        [esc(r["tile"]), f"{r['n_polygons']:,}", num(r["area_m2"] / 1e4), f"{100 * r['share']:.1f} %"]
        for r in report["tiles"]
        if r["area_m2"] > 0
    ]
    parts.append(table(["tile", "polygons", "area (ha)", "share"], tile_rows))
    parts.append("<h2>Regions</h2>")
    region_rows = [
        [
            esc(z["name"]),
            f"{z['n_polygons']:,}",
            num(z["area_m2"] / 1e4),
            esc(", ".join(f"{names.get(k, k)}: {num(v['area_m2'] / 1e4)} ha" for k, v in z["classes"].items())),
        ]
        for z in [*report["regions"], report["outside_aoi"]]
    ]
    parts.append(table(["region", "polygons", "area (ha)", "classes"], region_rows))
    if report.get("years"):
        parts.append("<h2>Years with data</h2>")
        year_rows = [
            [esc(names.get(k, k)), esc(", ".join(f"{y}: {n}" for y, n in v.items()))]
            for k, v in report["years"].items()
        ]
        parts.append(table(["class", "polygons per year (0 = unknown)"], year_rows, left=2))
    if report.get("previous_map"):
        prev = report["previous_map"]
        parts.append(f"<h2>Against the previous map</h2><p>{esc(prev['file'])}</p>")
        rows = [
            [
                esc(r["class_name"]),
                f"{100 * r['reference_share']:.1f} %",
                f"{100 * r['map_share']:.1f} %",
                "–" if r["ratio"] is None else f"{r['ratio']:.2f}",
                "yes" if r["under_represented"] else "",
            ]
            for r in prev["classes"]
        ]
        parts.append(table(["class", "reference share", "map share", "ratio", "under-represented"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_quality(
    ref_path: Path,
    cfg: ProjectConfig,
    out_dir: Path,
    *,
    legend_name: str | None = None,
    previous_map: Path | None = None,
    under_ratio: float = UNDER_RATIO,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Compute the quality report of ``ref_path`` and write JSON, HTML and PNGs to ``out_dir``.

    Everything is rendered in a temporary folder next to ``out_dir`` first, then moved in
    file by file (the JSON last), so a failure leaves no partial report. When no polygon of
    the reference falls inside the AOI: a warning, and ``EmptyResultError`` (nothing written)
    unless ``allow_empty``.
    """
    from lcms_tasks.grid import load_aoi, tiles_for_aoi
    from lcms_tasks.reference.ingest import read_ingested

    ref = read_ingested(ref_path, allow_empty=True)
    report = quality_report(
        ref, cfg, legend_name=legend_name, previous_map=previous_map, under_ratio=under_ratio, source=str(ref_path)
    )
    aoi = load_aoi(cfg)
    if report["n_polygons_inside_aoi"] == 0:
        where = f"; the reference lies at {_bounds_text(ref)}" if len(ref) else ""
        message = (
            f"reference file {ref_path}: none of its {len(ref)} polygon(s) falls inside the AOI of project "
            f"{cfg.project!r} ({_bounds_text(aoi)}){where}"
        )
        log.warning("%s", message)
        if not allow_empty:
            raise EmptyResultError(f"{message}; no quality report written")
    tiles = tiles_for_aoi(aoi, cfg.grid)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {"class_areas": "class_areas.png", "density": "density.png"}
    with tempfile.TemporaryDirectory(prefix=".quality-", dir=out_dir) as tmp:
        staging = Path(tmp)
        plot_class_areas(report, staging / images["class_areas"])
        plot_density(report, tiles, aoi, staging / images["density"])
        (staging / "quality.html").write_text(render_html(report, images), encoding="utf-8")
        (staging / "quality.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        for name in (*images.values(), "quality.html", "quality.json"):
            os.replace(staging / name, out_dir / name)
    log.info("reference quality report of %s written to %s", ref_path, out_dir)
    return report
