"""Everything about a project that can be checked without imagery, in one place.

``lcms config validate`` runs :func:`check_project`, and so does the first task of every DAG run
(for the run's season), so a bad config fails in seconds, before any tile is mapped, with one
line per problem naming the file, the field or the record. Nothing here writes anything that
stays: the storage check creates and deletes one probe file in the nearest existing folder.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lcms_tasks.errors import ConfigError

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.config import ProjectConfig

#: Degrees a projected AOI may stray outside its CRS's area of use (zones overlap in practice).
AREA_OF_USE_MARGIN_DEG = 1.0


def coordinates_problem(frame: gpd.GeoDataFrame, where: str) -> str | None:
    """Why ``frame``'s coordinates contradict its CRS (degrees in a metre CRS, or the reverse), or None."""
    from pyproj import CRS

    crs = CRS.from_user_input(frame.crs)
    min_x, min_y, max_x, max_y = (float(v) for v in frame.total_bounds)
    bounds = f"x {min_x:.6g}..{max_x:.6g}, y {min_y:.6g}..{max_y:.6g}"
    if not all(math.isfinite(v) for v in (min_x, min_y, max_x, max_y)):
        return f"{where} has non-finite coordinates ({bounds})"
    if crs.is_geographic:
        if min_x < -180 or max_x > 180 or min_y < -90 or max_y > 90:
            return (
                f"{where}: coordinates ({bounds}) are not longitudes/latitudes, but its CRS {crs.to_string()} is "
                "geographic: are they metres of a projected CRS (declare that CRS)?"
            )
        return None
    area = crs.area_of_use
    try:
        lon_min, lat_min, lon_max, lat_max = (float(v) for v in frame.to_crs(4326).total_bounds)
    except Exception as err:  # pyproj refuses points outside the projection's domain
        return (
            f"{where}: coordinates ({bounds}) cannot be transformed from {crs.to_string()} to longitude/latitude: {err}"
        )
    if not all(math.isfinite(v) for v in (lon_min, lat_min, lon_max, lat_max)):
        return f"{where}: coordinates ({bounds}) lie outside the domain of its CRS {crs.to_string()}"
    if area is None or area.west > area.east:  # unknown, or crossing the antimeridian: nothing to compare
        return None
    m = AREA_OF_USE_MARGIN_DEG
    if lon_min < area.west - m or lon_max > area.east + m or lat_min < area.south - m or lat_max > area.north + m:
        return (
            f"{where}: coordinates ({bounds}) fall at longitude {lon_min:.3f}..{lon_max:.3f}, latitude "
            f"{lat_min:.3f}..{lat_max:.3f}, outside where its CRS {crs.to_string()} is used (longitude "
            f"{area.west:g}..{area.east:g}, latitude {area.south:g}..{area.north:g}): is the CRS right "
            "(degrees declared as metres, or another zone)?"
        )
    return None


def storage_problem(cfg: ProjectConfig) -> str | None:
    """Why the storage root cannot be written, or None (S3 roots are checked by the first write)."""
    root = cfg.storage_root
    if root.startswith("s3://"):
        return None
    path = Path(root[len("file://") :])
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        return f"storage.root: {path} cannot be created: {probe_dir} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe_dir, prefix=".lcms-write-probe-"):
            pass
    except OSError as err:
        made = "" if probe_dir == path else f" (it would be created in {probe_dir})"
        return f"storage.root: {path} is not writable{made}: {err.strerror or err}"
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        return f"storage.root: {probe_dir} is not writable by this user"
    return None


def stage_option_problems(cfg: ProjectConfig, seasons: list[str]) -> list[str]:
    """Stage options that name classes or seasons the config does not have."""
    from lcms_tasks.stages import add_reference

    problems: list[str] = []
    try:
        legend = cfg.legend()
    except ConfigError as err:
        return [str(err)]
    try:
        add_reference.class_erosion(cfg.stages.add_reference, legend)
    except ConfigError as err:
        problems.append(str(err))
    cd = cfg.stages.change_detection
    if cd.before_season and cd.before_season not in cfg.seasons:
        problems.append(
            f"stages.change_detection.before_season: {cd.before_season!r} is not a season of the config "
            f"({', '.join(cfg.seasons)})"
        )
    if "transitions" in cd.model_fields_set:
        from lcms_tasks.changes import resolve_transitions

        try:
            resolve_transitions(
                cd.transitions, {c.id: c.name for c in legend}, strict=True, where="stages.change_detection.transitions"
            )
        except ValueError as err:
            problems.append(f"stages.change_detection.transitions: {err}")
    model_season = cfg.stages.prediction.model_season
    if model_season and model_season not in cfg.seasons:
        problems.append(
            f"stages.prediction.model_season: {model_season!r} is not a season of the config ({', '.join(cfg.seasons)})"
        )
    from lcms_tasks.reference.checks import check_file_sources

    problems.extend(check_file_sources(cfg.stages.add_reference, cfg, seasons))
    return problems


def check_project(cfg: ProjectConfig, *, config_path: str | None = None, seasons: list[str] | None = None) -> None:
    """Every check that needs no imagery; ``ConfigError`` with one line per problem.

    ``seasons``: the seasons whose per-season inputs (reference files with ``{season}``) must exist;
    default every season of the config.
    """
    from lcms_tasks.grid import load_aoi

    problems: list[str] = []
    try:
        load_aoi(cfg)  # readable, has a CRS, coordinates that agree with it, polygons with an area
    except ConfigError as err:
        problems.append(str(err))
    storage = storage_problem(cfg)
    if storage:
        problems.append(storage)
    problems.extend(stage_option_problems(cfg, list(seasons) if seasons is not None else list(cfg.seasons)))
    if problems:
        raise ConfigError("\n".join(problems), path=config_path)
