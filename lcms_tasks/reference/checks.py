"""Config-time checks of the add_reference stage's file sources: one line per problem, nothing read in bulk.

:func:`check_file_sources` looks at what a tile would open, for every season it is asked about,
and says what would fail there: a missing or unreadable vector file, a missing layer, a file
without a CRS, a class column the file lacks, a missing crosswalk file or crosswalk column, and
crosswalk classes the project's legend does not have. Each line names the config field
(``stages.add_reference.sources[0].path``), the file (and season) and the problem.

Vector files are inspected through their metadata only (GDAL layer list, schema and CRS: no
feature is read); crosswalk files, which are small tables, are read whole only for the step
whose classes are checked (the last of a chain), otherwise their header line. Nothing is
written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ConfigError

if TYPE_CHECKING:
    from lcms_tasks.config import LegendClass, ProjectConfig
    from lcms_tasks.stages.add_reference import FileSource, Options

SEASON = "{season}"


def _serves(source: FileSource, season: str) -> bool:
    return source.seasons is None or season in source.seasons


def _paths(cfg: ProjectConfig, template: str, seasons: Sequence[str]) -> Iterator[tuple[Path, str]]:
    """(resolved path, ' (season S)' or '') of ``template`` for each season, or once without ``{season}``."""
    if SEASON not in template:
        yield cfg.resolve_path(template), ""
        return
    for season in seasons:
        yield cfg.resolve_path(template.replace(SEASON, season)), f" (season {season})"


def _vector_problems(field: str, source: FileSource, path: Path, when: str) -> list[str]:
    """What reading ``path`` as the source's vector file would fail on (metadata only)."""
    import fiona

    from lcms_tasks.reference.sources import gdal_path

    where = f"{path}{when}"
    if not path.exists():
        return [f"{field}.path: {where}: file does not exist"]
    if path.is_file() and path.stat().st_size == 0:
        return [f"{field}.path: {where}: file is empty (0 bytes)"]
    if path.name.lower().endswith((".parquet", ".geoparquet")):
        return [
            f"{field}.path: {where}: GeoParquet is not a vector file the add_reference stage can read (GDAL here "
            "has no Parquet driver); convert it to GeoPackage (ogr2ogr, or `lcms reference ingest`)"
        ]
    name = gdal_path(path)
    try:
        layers = list(fiona.listlayers(name))
    except Exception as err:  # fiona/GDAL raise many types; all mean "cannot open this as a vector file"
        return [f"{field}.path: {where}: not a readable vector file: {err}"]
    if source.layer is not None and source.layer not in layers:
        return [f"{field}.layer: {where}: no layer {source.layer!r}; the file has layers {layers}"]
    try:
        with fiona.open(name, layer=source.layer) as collection:
            crs = collection.crs
            columns = list(collection.schema["properties"])
    except Exception as err:  # as above
        return [f"{field}.path: {where}: not a readable vector file: {err}"]
    problems = []
    if not crs:
        problems.append(
            f"{field}.path: {where}: file has no CRS; give it one (e.g. a .prj next to a Shapefile, or ogr2ogr -a_srs)"
        )
    if source.class_column not in columns:
        problems.append(f"{field}.class_column: {where}: no column {source.class_column!r}; its columns: {columns}")
    return problems


def _legend_problem(
    field: str, mapping: dict[Any, Any], legend: Sequence[LegendClass], legend_name: str, where: str
) -> list[str]:
    """Classes of ``mapping`` (code -> class name or id) that ``legend`` lacks, in one line."""
    from lcms_tasks.reference.sources import resolve_class

    unknown: dict[str, list[str]] = {}
    for code, cls in mapping.items():
        try:
            resolve_class(cls, list(legend), where=where)
        except ConfigError:
            unknown.setdefault(str(cls), []).append(str(code))
    if not unknown:
        return []
    listed = "; ".join(
        f"{cls!r} (code {', '.join(codes[:5])}{', ...' if len(codes) > 5 else ''})"
        for cls, codes in sorted(unknown.items())
    )
    classes = ", ".join(f"{c.id} {c.name}" for c in legend)
    return [f"{field}: {where}: class(es) not in the {legend_name} legend: {listed}; it has {classes} (0 = no label)"]


def _crosswalk_file_problems(
    field: str,
    cfg: ProjectConfig,
    template: str,
    seasons: Sequence[str],
    legend: Sequence[LegendClass] | None,
    legend_name: str,
) -> list[str]:
    """``crosswalk_file``: the stage's reader (columns code, class) on each file; classes against the legend."""
    from lcms_tasks.reference.sources import read_crosswalk_csv

    problems = []
    for path, when in _paths(cfg, template, seasons):
        if not path.is_file():
            problems.append(f"{field}: {path}{when}: file does not exist")
            continue
        try:
            mapping = read_crosswalk_csv(path)
        except (ConfigError, UnicodeDecodeError) as err:
            problems.append(f"{field}: {path}{when}: {err}")
            continue
        if legend is not None:
            problems.extend(_legend_problem(field, dict(mapping), legend, legend_name, f"{path}{when}"))
    return problems


def _chain_problems(
    field: str,
    source: FileSource,
    cfg: ProjectConfig,
    seasons: Sequence[str],
    legend: Sequence[LegendClass] | None,
    legend_name: str,
) -> list[str]:
    """``crosswalk_chain``: every step's file and columns (header only); the last step's classes."""
    from lcms_tasks.reference.crosswalk import is_yaml, missing_columns, read_crosswalk, read_header

    steps = source.crosswalk_chain or []
    problems: list[str] = []
    for k, step in enumerate(steps):
        step_field = f"{field}.crosswalk_chain[{k}]"
        last = k == len(steps) - 1
        for path, when in _paths(cfg, step.path, seasons):
            where = f"{path}{when}"
            if not path.is_file():
                problems.append(f"{step_field}.path: {where}: crosswalk file does not exist")
                continue
            if not is_yaml(path):
                try:
                    header = read_header(path)
                except ConfigError as err:
                    problems.append(f"{step_field}.path: {where}: {err}")
                    continue
                missing = [
                    (name, column)
                    for name, column in (("code_column", step.code_column), ("target_column", step.target_column))
                    if missing_columns(header, column)
                ]
                for name, column in missing:
                    problems.append(
                        f"{step_field}.{name}: {where}: no column {column!r}; its header (line 1) is {header}"
                    )
                if missing:
                    continue
            if not last:
                continue
            try:
                crosswalk = read_crosswalk(path, code_column=step.code_column, target_column=step.target_column)
                if legend is not None:
                    crosswalk.resolve(legend, legend_name=legend_name)
            except ConfigError as err:
                problems.append(f"{step_field}.path: {where}: {err}")
    return problems


def check_file_sources(options: Options, cfg: ProjectConfig, seasons: list[str]) -> list[str]:
    """One line per problem of the ``file`` sources of ``options`` (empty: fine).

    ``seasons``: the seasons to check ``{season}`` paths for (each source only for the seasons it
    serves). Checks that each vector file exists, is a readable vector file, has the ``layer``
    asked for, a CRS and the ``class_column``; that crosswalk files exist and have their code
    and target columns; and that the crosswalk's classes (inline, the file's, or a chain's last
    step's) are in the project's legend (``cfg.legend()``). Paths resolve with ``cfg.resolve_path``.
    """
    problems: list[str] = []
    legend: Sequence[LegendClass] | None
    try:
        legend = cfg.legend()
    except ConfigError as err:
        legend = None
        problems.append(f"stages.add_reference: crosswalk classes not checked: {err}")
    legend_name = cfg.classification.legend
    for i, source in enumerate(options.sources):
        if source.type != "file":
            continue
        field = f"stages.add_reference.sources[{i}]"
        served = [s for s in seasons if _serves(source, s)]
        for path, when in _paths(cfg, source.path, served):
            problems.extend(_vector_problems(field, source, path, when))
        if source.crosswalk is not None and legend is not None:
            problems.extend(
                _legend_problem(f"{field}.crosswalk", source.crosswalk, legend, legend_name, "inline crosswalk")
            )
        if source.crosswalk_file is not None:
            problems.extend(
                _crosswalk_file_problems(
                    f"{field}.crosswalk_file", cfg, source.crosswalk_file, served, legend, legend_name
                )
            )
        if source.crosswalk_chain is not None:
            problems.extend(_chain_problems(field, source, cfg, served, legend, legend_name))
    return problems
