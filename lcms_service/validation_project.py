"""What the Validation API knows of the project from its config: legend, AOI and regions, and geometry checks.

The service's config (``ServiceSettings.config``, ``LCMS_CONFIG``) names one project. For that project
the legend decides which classes a correction may set and the AOI where an edited outline may lie;
its regions (``aoi.region_column``) are the queue's ``region`` filter. Changes of another project in
the store (or a service without a config) fall back to the classes that project's changes use, and the
AOI check is skipped. The config is read once, on first use, in a worker thread.

:func:`check_geometry` turns a GeoJSON geometry from a client into a valid shapely (Multi)Polygon in
EPSG:4326 or a :class:`GeometryProblemError` naming what is wrong: not a Polygon/MultiPolygon, malformed
coordinates, not finite, outside ±180/±90 (projected coordinates sent as if they were degrees), empty,
invalid (the reason and place GEOS gives). :meth:`ProjectInfo.check_in_aoi` adds the AOI check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from lcms_service.settings import ServiceSettings

log = logging.getLogger(__name__)


class GeometryProblemError(ValueError):
    """A geometry the API refuses; the message names the problem (a 422)."""


@dataclass
class ProjectInfo:
    """The config's project: name, legend, AOI (EPSG:4326) and regions; ``error`` if the config could not be read."""

    project: str | None = None
    legend: dict[int, str] = field(default_factory=dict)
    #: product -> its legend (every product of the config, the primary one included): parcel checks' classes
    product_legends: dict[str, dict[int, str]] = field(default_factory=dict)
    aoi: Any = None  # shapely geometry, EPSG:4326 (prepared)
    regions: dict[str, Any] = field(default_factory=dict)  # name -> shapely geometry, EPSG:4326
    region_column: str | None = None
    error: str | None = None

    def region_wkb(self, name: str) -> bytes:
        """The region ``name`` as WKB (EPSG:4326); :class:`LookupError` naming the known regions."""
        import shapely

        if not self.region_column:
            where = f"project {self.project!r}" if self.project else "the service (no project config)"
            raise LookupError(f"region {name!r}: {where} has no regions (the config sets no aoi.region_column)")
        if name not in self.regions:
            raise LookupError(f"unknown region {name!r}; the regions of {self.project!r}: {', '.join(self.regions)}")
        wkb: bytes = shapely.to_wkb(self.regions[name])
        return wkb

    def check_in_aoi(self, geom: Any, project: str) -> None:
        """:class:`GeometryProblemError` if ``geom`` (EPSG:4326) does not touch the AOI of ``project`` (when known)."""
        if project != self.project or self.aoi is None:
            return
        if not self.aoi.intersects(geom):
            w, s, e, n = (round(v, 6) for v in geom.bounds)
            aw, as_, ae, an = (round(v, 6) for v in self.aoi.bounds)
            raise GeometryProblemError(
                f"geometry: lies outside the AOI of project {project!r} (geometry bounds {w}, {s}, {e}, {n}; "
                f"AOI bounds {aw}, {as_}, {ae}, {an}, EPSG:4326)"
            )


def load_project(settings: ServiceSettings) -> ProjectInfo:
    """The project of ``settings.config`` (blocking: reads the config and the AOI file)."""
    if settings.config is None:
        return ProjectInfo(error="the service has no project config (LCMS_CONFIG)")
    import shapely

    from lcms_tasks.config import load_config
    from lcms_tasks.grid import load_aoi

    try:
        cfg = load_config(settings.config, check_files=False)
        aoi = load_aoi(cfg).to_crs(4326)
    except Exception as err:  # a broken config must not take the API down: say why where it matters
        log.error("validation API: cannot read the project config %s: %s", settings.config, err)
        return ProjectInfo(error=f"cannot read the project config {settings.config}: {err}")
    column = cfg.aoi.region_column
    regions: dict[str, Any] = {}
    if column:
        keys = aoi[column].astype(str)
        for name in dict.fromkeys(keys):
            regions[name] = shapely.union_all(list(aoi.geometry[keys == name]))
    whole = shapely.union_all(list(aoi.geometry))
    shapely.prepare(whole)
    return ProjectInfo(
        project=cfg.project,
        legend={c.id: c.name for c in cfg.legend()},
        product_legends={p: {c.id: c.name for c in cfg.for_product(p).legend()} for p in cfg.product_names()},
        aoi=whole,
        regions=regions,
        region_column=column,
    )


_LOCK = asyncio.Lock()


async def project_info(app_state: Any) -> ProjectInfo:
    """The app's :class:`ProjectInfo`, read on first use (``app.state.validation_project``)."""
    info: ProjectInfo | None = getattr(app_state, "validation_project", None)
    if info is not None:
        return info
    async with _LOCK:
        info = getattr(app_state, "validation_project", None)
        if info is None:
            info = await anyio.to_thread.run_sync(load_project, app_state.store.settings)
            app_state.validation_project = info
    return info


# ----------------------------------------------------------------------------------- geometries
_MAX_VERTICES = 100_000


def _positions(coords: Any, depth: int, what: str) -> None:
    """:class:`GeometryProblemError` unless ``coords`` nests lists ``depth`` deep down to [x, y] number pairs."""
    if depth == 0:
        if not isinstance(coords, list) or len(coords) not in (2, 3):
            raise GeometryProblemError(
                f"geometry: a position of the {what} is not [longitude, latitude]: {coords!r:.80}"
            )
        for v in coords:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise GeometryProblemError(f"geometry: a coordinate of the {what} is not a number: {v!r:.40}")
            if not math.isfinite(v):
                raise GeometryProblemError(f"geometry: a coordinate of the {what} is not finite: {v!r}")
        return
    if not isinstance(coords, list):
        raise GeometryProblemError(f"geometry: the {what}'s coordinates are not nested arrays: {coords!r:.80}")
    for item in coords:
        _positions(item, depth - 1, what)


def check_geometry(data: dict[str, Any]) -> Any:
    """A valid shapely Polygon or MultiPolygon (EPSG:4326) from GeoJSON ``data``, or :class:`GeometryProblemError`."""
    import shapely

    kind = data.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise GeometryProblemError(f"geometry: a {kind!r} is not a Polygon or MultiPolygon")
    crs = data.get("crs")
    if crs is not None:
        name = str(((crs or {}).get("properties") or {}).get("name", "")) if isinstance(crs, dict) else str(crs)
        if not any(tag in name.upper().replace("::", ":") for tag in ("CRS84", "EPSG:4326")):
            raise GeometryProblemError(
                f"geometry: coordinates must be in EPSG:4326 (longitude, latitude); the geometry names CRS {name!r:.80}"
            )
    coords = data.get("coordinates")
    if not isinstance(coords, list):
        raise GeometryProblemError(f"geometry: the {kind}'s coordinates are missing or not an array")
    _positions(coords, 2 if kind == "Polygon" else 3, kind)
    flat = [p for ring in (coords if kind == "Polygon" else [r for poly in coords for r in poly]) for p in ring]
    if not flat:
        raise GeometryProblemError("geometry: empty (no coordinates)")
    if len(flat) > _MAX_VERTICES:
        raise GeometryProblemError(f"geometry: {len(flat)} vertices, more than the {_MAX_VERTICES} accepted")
    lons = [p[0] for p in flat]
    lats = [p[1] for p in flat]
    if min(lons) < -180 or max(lons) > 180 or min(lats) < -90 or max(lats) > 90:
        raise GeometryProblemError(
            f"geometry: coordinates outside longitude ±180 / latitude ±90 (x {min(lons):.6g}..{max(lons):.6g}, "
            f"y {min(lats):.6g}..{max(lats):.6g}): send EPSG:4326 longitude/latitude, not projected (e.g. UTM) "
            "coordinates"
        )
    try:
        geom = shapely.from_geojson(json.dumps({"type": kind, "coordinates": coords}))
    except (shapely.errors.GEOSException, ValueError) as err:
        raise GeometryProblemError(f"geometry: not a valid {kind}: {err}") from err
    if geom.is_empty:
        raise GeometryProblemError("geometry: empty")
    if not shapely.is_valid(geom):
        raise GeometryProblemError(f"geometry: invalid: {shapely.is_valid_reason(geom)}")
    if geom.area <= 0:
        raise GeometryProblemError("geometry: has no area")
    return geom
