"""The project config: one YAML file, validated by pydantic models.

A config says which country (AOI), which grid, which seasons, which legends,
where imagery comes from, where artefacts are stored and how each stage
behaves. Unknown keys are errors. ``${VAR}`` and ``${VAR:-default}`` in the
YAML text are replaced by environment variables, so one file serves a laptop
and production. Relative paths are relative to the config file's folder.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from lcms_tasks.errors import ConfigError
from lcms_tasks.schema import StrictModel
from lcms_tasks.sources.import_source import ImportSourceConfig
from lcms_tasks.sources.sentinelhub_source import SentinelHubSourceConfig
from lcms_tasks.stages import add_reference as _add_reference
from lcms_tasks.stages import change_detection as _change_detection
from lcms_tasks.stages import download as _download
from lcms_tasks.stages import features as _features
from lcms_tasks.stages import merge_features as _merge_features
from lcms_tasks.stages import postprocessing as _postprocessing
from lcms_tasks.stages import prediction as _prediction
from lcms_tasks.stages import publish as _publish
from lcms_tasks.stages import reporting as _reporting
from lcms_tasks.stages import sampling as _sampling
from lcms_tasks.stages import training as _training

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class AOIConfig(StrictModel):
    """Area of interest: a vector file or inline GeoJSON, in any CRS (it must declare one)."""

    file: Path | None = Field(None, description="Vector file GDAL can read (GeoPackage, GeoJSON, Shapefile, ...).")
    geojson: dict[str, Any] | None = Field(
        None, description="Inline GeoJSON FeatureCollection, Feature or geometry (needs `crs`)."
    )
    crs: str | None = Field(
        None, description="CRS of inline GeoJSON (e.g. 'EPSG:4326'); for files, overrides nothing and must be unset."
    )
    layer: str | None = Field(None, description="Layer to read from a multi-layer file.")
    region_column: str | None = Field(
        None, description="Column naming AOI subdivisions (regions) for per-region reporting."
    )

    @model_validator(mode="after")
    def _one_source(self) -> AOIConfig:
        if (self.file is None) == (self.geojson is None):
            raise ValueError("give exactly one of `file` or `geojson`")
        if self.geojson is not None and not self.crs:
            raise ValueError("inline `geojson` needs `crs` (e.g. 'EPSG:4326'): an AOI without a CRS is ambiguous")
        if self.file is not None and self.crs:
            raise ValueError("`crs` is only for inline `geojson`; a file carries its own CRS")
        return self


class GridConfig(StrictModel):
    """Regular tiling grid in the AOI's UTM zone(s)."""

    tile_size_px: int = Field(500, ge=8, le=20000, description="Tile side in pixels.")
    resolution_m: float = Field(10.0, gt=0, le=1000, description="Pixel size in metres.")
    crs: Literal["utm"] | int = Field(
        "utm", description="'utm': the UTM zone(s) the AOI lies in (tiles per zone); or one EPSG code."
    )
    batch_size: int = Field(
        32,
        ge=1,
        le=10000,
        description="Tiles per mapped task instance (32: see the README, `make bench-scale`, for the trade-off).",
    )


class SeasonConfig(StrictModel):
    """A season: the time interval whose imagery makes one map."""

    start: dt.date = Field(description="First day (inclusive).")
    end: dt.date = Field(description="Last day (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> SeasonConfig:
        if self.end <= self.start:
            raise ValueError(f"season end {self.end} must be after its start {self.start}")
        return self


class LegendClass(StrictModel):
    """One class of a legend."""

    id: int = Field(ge=1, le=254, description="Class id written in maps (0 is reserved for no data).")
    name: str = Field(min_length=1, description="Class name.")
    color: str = Field("#808080", pattern=r"^#[0-9A-Fa-f]{6}$", description="Display colour, #rrggbb.")
    kind: str | None = Field(
        None,
        description="What the synthetic source simulates for this class (e.g. 'forest', 'maize'); "
        "defaults to the class name in snake case.",
    )


def _check_legend(classes: list[LegendClass], name: str) -> list[LegendClass]:
    ids = [c.id for c in classes]
    names = [c.name for c in classes]
    dup_ids = sorted({i for i in ids if ids.count(i) > 1})
    dup_names = sorted({n for n in names if names.count(n) > 1})
    if dup_ids:
        raise ValueError(f"{name} legend repeats class id(s) {dup_ids}")
    if dup_names:
        raise ValueError(f"{name} legend repeats class name(s) {dup_names}")
    return classes


class LegendsConfig(StrictModel):
    """Land cover and crop type legends (separate; a crop-only project needs no land cover legend)."""

    land_cover: list[LegendClass] = Field(default_factory=list, description="Land cover classes.")
    crop_type: list[LegendClass] = Field(default_factory=list, description="Crop type classes.")

    @field_validator("land_cover")
    @classmethod
    def _lc(cls, v: list[LegendClass]) -> list[LegendClass]:
        return _check_legend(v, "land_cover")

    @field_validator("crop_type")
    @classmethod
    def _ct(cls, v: list[LegendClass]) -> list[LegendClass]:
        return _check_legend(v, "crop_type")


class SyntheticSourceConfig(StrictModel):
    """Deterministic synthetic Sentinel-2 L2A-like source (no account, no network)."""

    type: Literal["synthetic"] = "synthetic"
    seed: int = Field(42, description="Seed of every random draw; same seed, same imagery.")
    revisit_days: int = Field(5, ge=1, le=30, description="Nominal revisit in days.")
    missing_date_fraction: float = Field(0.1, ge=0, lt=1, description="Share of nominal dates with no acquisition.")
    cloud_cover: float = Field(0.3, ge=0, le=1, description="Mean cloud fraction per date.")
    fully_cloudy_fraction: float = Field(0.08, ge=0, le=1, description="Share of dates entirely cloudy.")
    nodata_edge_fraction: float = Field(0.1, ge=0, le=1, description="Share of dates with a no-data swath edge.")
    noise: float = Field(0.01, ge=0, le=0.2, description="Per-pixel reflectance noise (std).")
    change_fraction: float = Field(
        0.06, ge=0, le=0.5, description="Approximate share of a tile that changes between consecutive seasons."
    )


SourceConfig = Annotated[
    SyntheticSourceConfig | SentinelHubSourceConfig | ImportSourceConfig, Field(discriminator="type")
]


class StorageConfig(StrictModel):
    """Where artefacts live: one root URI."""

    root: str = Field(
        "lcms-data", description="file:// path, plain path (relative to the config file) or s3://bucket/prefix."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (for non-AWS servers).")
    compress_arrays: bool = Field(
        False,
        description="gzip the arrays of tile EOPatches (smaller on S3, several times slower to write and read).",
    )


class DatabaseConfig(StrictModel):
    """The change store: PostgreSQL with PostGIS."""

    url: str | None = Field(
        None,
        description="SQLAlchemy/libpq URL, e.g. postgresql://lcms@db:5432/lcms (keep a password out of the file: "
        "reference an environment variable with the ${...} syntax). "
        "None: the environment's LCMS_DATABASE_URL, else inside Airflow tasks the connection "
        "`airflow_conn_id`, else the project-local embedded database that `make demo` / `make serve` start.",
    )
    airflow_conn_id: str = Field(
        "lcms_change_store", description="Airflow connection holding the change store's URL inside tasks."
    )


class ClassificationConfig(StrictModel):
    """What the classifier maps."""

    legend: Literal["land_cover", "crop_type"] = Field("land_cover", description="Legend the model predicts.")


class ProductMask(StrictModel):
    """Where a product is mapped: the pixels another product's map puts in some of its classes."""

    product: str = Field(description="An earlier product of `products` (e.g. 'land_cover').")
    classes: list[str] = Field(
        min_length=1, description="Class names of that product's legend inside which this product is mapped."
    )


class ProductStages(StrictModel):
    """A product's own stage options: each key is merged over the top-level `stages` entry of the same name.

    Mappings merge key by key (so `training: {n_estimators: 300}` keeps every other training option of the
    top-level `stages.training`); lists and values replace (`add_reference: {sources: [...]}` replaces the
    sources).
    """

    add_reference: dict[str, Any] | None = Field(None, description="Over `stages.add_reference`.")
    sampling: dict[str, Any] | None = Field(None, description="Over `stages.sampling`.")
    merge_features: dict[str, Any] | None = Field(None, description="Over `stages.merge_features`.")
    training: dict[str, Any] | None = Field(None, description="Over `stages.training`.")
    prediction: dict[str, Any] | None = Field(None, description="Over `stages.prediction` (e.g. `model_season`).")
    postprocessing: dict[str, Any] | None = Field(None, description="Over `stages.postprocessing`.")
    reporting: dict[str, Any] | None = Field(None, description="Over `stages.reporting`.")
    publish: dict[str, Any] | None = Field(
        None, description="Over `stages.publish` (e.g. `byoc: {collection: ...}`: the product's own BYOC collection)."
    )


class ProductConfig(StrictModel):
    """One map product of the project: a legend, its reference and model, and where it is mapped."""

    legend: Literal["land_cover", "crop_type"] = Field(description="The legend (of `legends`) this product maps.")
    mask: ProductMask | None = Field(
        None,
        description="Map only inside these classes of an earlier product (e.g. crop type inside land cover "
        "'cropland'); no data elsewhere. None: everywhere.",
    )
    stages: ProductStages = Field(default_factory=ProductStages, description="This product's own stage options.")


#: Mapped stages whose outputs are the training samples: a tile failed there biases the model, so by
#: default none may fail (``failures.training_inputs``).
TRAINING_INPUT_STAGES = ("add_reference", "sampling")


class Tolerance(StrictModel):
    """How many tiles of one stage run may fail with the run still handed on: the larger of the two limits."""

    max_count: int = Field(0, ge=0, description="Failed tiles tolerated whatever the run's size.")
    max_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Failed tiles tolerated as a share of the tiles the run processes."
    )

    def allowed(self, n_tiles: int) -> int:
        """Failed tiles tolerated in a run of ``n_tiles`` tiles."""
        return max(self.max_count, math.floor(self.max_fraction * n_tiles + 1e-9))


class ScheduleConfig(StrictModel):
    """When a project's chain starts by itself: the first stage's schedule (later stages follow by assets).

    ``timetable: seasons`` gives ``lcms_download`` one run per season of the config, after the season's
    end (plus ``delay_days``); its data interval is the season, so a scheduled run processes the season
    that has just ended and ``airflow backfill create --dag-id lcms_download --from-date ... --to-date ...``
    makes one run per past season that starts in the window. Yearly crop runs: one season per year.
    """

    timetable: Literal["none", "seasons"] = Field(
        "none", description="'none': runs by hand (or by backfill); 'seasons': one scheduled run per season."
    )
    delay_days: int = Field(
        0,
        ge=0,
        le=366,
        description="Days after a season's last day before its scheduled run starts (imagery of the season's "
        "last days processed and available at the source).",
    )
    catchup: bool = Field(
        False,
        description="On a new deployment, run every season that has already ended (True) or only the latest "
        "(False); past seasons are better backfilled on purpose.",
    )


class FailuresConfig(StrictModel):
    """Failed tiles a stage run tolerates: within it the run hands on the tiles that succeeded, the failed
    ones become gaps (listed in the run summary and the report) that ``lcms rerun-failed`` fills later."""

    mapped: Tolerance = Field(
        default_factory=lambda: Tolerance(max_fraction=0.02),
        description="Stages whose failed tiles are gaps in the maps: download, features, prediction, "
        "postprocessing, change_detection, publish (default: 2 % of the run's tiles).",
    )
    training_inputs: Tolerance = Field(
        default_factory=Tolerance,
        description="Stages whose tiles are the training samples: add_reference, sampling (default: none).",
    )
    stages: dict[str, Tolerance] = Field(
        default_factory=dict, description="Per-stage tolerances (by stage name), replacing the two above."
    )

    @field_validator("stages")
    @classmethod
    def _mapped_stages(cls, v: dict[str, Tolerance]) -> dict[str, Tolerance]:
        from lcms_tasks.stages import STAGES

        mapped = [s.name for s in STAGES if s.mapped]
        unknown = sorted(set(v) - set(mapped))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: only per-tile stages have failed tiles to tolerate ({', '.join(mapped)})"
            )
        return v

    def for_stage(self, stage: str) -> tuple[Tolerance, str]:
        """The tolerance of ``stage`` and the config key it comes from (for messages)."""
        if stage in self.stages:
            return self.stages[stage], f"failures.stages.{stage}"
        if stage in TRAINING_INPUT_STAGES:
            return self.training_inputs, "failures.training_inputs"
        return self.mapped, "failures.mapped"


class StagesConfig(StrictModel):
    """Per-stage options (each stage module owns its schema)."""

    download: _download.Options = Field(default_factory=_download.Options)
    features: _features.Options = Field(default_factory=_features.Options)
    add_reference: _add_reference.Options = Field(default_factory=_add_reference.Options)
    sampling: _sampling.Options = Field(default_factory=_sampling.Options)
    merge_features: _merge_features.Options = Field(default_factory=_merge_features.Options)
    training: _training.Options = Field(default_factory=_training.Options)
    prediction: _prediction.Options = Field(default_factory=_prediction.Options)
    postprocessing: _postprocessing.Options = Field(default_factory=_postprocessing.Options)
    change_detection: _change_detection.Options = Field(default_factory=_change_detection.Options)
    reporting: _reporting.Options = Field(default_factory=_reporting.Options)
    publish: _publish.Options = Field(default_factory=_publish.Options)


class ProjectConfig(StrictModel):
    """One LCMS project."""

    project: str = Field(pattern=_NAME_PATTERN, description="Project name (used in storage paths).")
    aoi: AOIConfig = Field(description="Area of interest.")
    grid: GridConfig = Field(default_factory=GridConfig)
    seasons: dict[str, SeasonConfig] = Field(
        min_length=1, description="Seasons by id (e.g. '2023'); each run processes one season."
    )
    legends: LegendsConfig = Field(description="Land cover and crop type legends.")
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig)
    products: dict[str, ProductConfig] | None = Field(
        None,
        description="The map products of every run, in order, e.g. {land_cover: {legend: land_cover}, crop_type: "
        "{legend: crop_type, mask: {product: land_cover, classes: [cropland]}, stages: {add_reference: {sources: "
        "[...]}}}}. The first is the primary product: change detection and the operator application work on it. "
        "None: one product, `classification.legend`.",
    )
    source: SourceConfig = Field(default_factory=SyntheticSourceConfig, description="Imagery source.")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    failures: FailuresConfig = Field(default_factory=FailuresConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    # Folder of the config file; relative paths resolve against it. Not part of the schema.
    base_dir: Path = Field(default=Path(), exclude=True, description="(internal) folder of the config file")

    @model_validator(mode="after")
    def _classified_legend(self) -> ProjectConfig:
        if self.products:
            self._check_products(self.products)
            return self
        name = self.classification.legend
        classes = getattr(self.legends, name)
        if len(classes) < 2:
            raise ValueError(
                f"classification.legend is {name!r}, so legends.{name} needs at least 2 classes (it has {len(classes)})"
            )
        return self

    def _check_products(self, products: dict[str, ProductConfig]) -> None:
        primary = next(iter(products))
        if "classification" in self.model_fields_set and self.classification.legend != products[primary].legend:
            raise ValueError(
                f"classification.legend is {self.classification.legend!r} but the first (primary) product "
                f"{primary!r} maps {products[primary].legend!r}: with `products`, drop `classification`"
            )
        # The primary product's legend is the project's classification legend (what change detection,
        # the change store and the operator application read).
        object.__setattr__(self, "classification", ClassificationConfig(legend=products[primary].legend))
        seen: list[str] = []
        for name, product in products.items():
            where = f"products.{name}"
            if not re.match(r"^[a-z][a-z0-9_]*$", name):
                raise ValueError(f"{where}: a product name is lower-case letters, digits and '_' (e.g. crop_type)")
            classes = getattr(self.legends, product.legend)
            if len(classes) < 2:
                raise ValueError(
                    f"{where}.legend is {product.legend!r}, so legends.{product.legend} needs at least 2 classes "
                    f"(it has {len(classes)})"
                )
            if product.mask is not None:
                if product.mask.product not in seen:
                    earlier = ", ".join(seen) or "none"
                    raise ValueError(
                        f"{where}.mask.product {product.mask.product!r} is not an earlier product (earlier: {earlier})"
                    )
                legend = getattr(self.legends, products[product.mask.product].legend)
                known = {c.name for c in legend}
                unknown = [c for c in product.mask.classes if c not in known]
                if unknown:
                    raise ValueError(
                        f"{where}.mask.classes: {', '.join(map(repr, unknown))} not in the "
                        f"{products[product.mask.product].legend} legend ({', '.join(sorted(known))})"
                    )
            if name == primary and product.stages.model_dump(exclude_none=True):
                raise ValueError(
                    f"{where}.stages: the primary product's options are the top-level `stages`; "
                    "set them there (only the other products have their own)"
                )
            seen.append(name)
            self._product_stages(name, product)  # the merged options must validate

    def _product_stages(self, name: str, product: ProductConfig) -> StagesConfig:
        overrides = {k: v for k, v in product.stages.model_dump().items() if v is not None}
        if not overrides:
            return self.stages
        base = self.stages.model_dump(mode="json", exclude_unset=True)
        merged = {**base}
        for key, value in overrides.items():
            merged[key] = _deep_merge(base.get(key) or {}, value)
        try:
            return StagesConfig.model_validate(merged)
        except ValidationError as err:
            lines = format_validation_error(err).replace("\n", "\n  ")
            raise ValueError(f"products.{name}.stages (merged over `stages`): {lines}") from None

    # -- products ---------------------------------------------------------------------------------

    def product_names(self) -> list[str]:
        """The products in order; the first is the primary one."""
        return list(self.products) if self.products else [self.classification.legend]

    @property
    def primary_product(self) -> str:
        """The product change detection, the change store and the operator application work on."""
        return self.product_names()[0]

    def product(self, name: str) -> ProductConfig:
        """The product ``name`` (``ConfigError`` naming the known ones if absent)."""
        if not self.products:
            if name == self.classification.legend:
                return ProductConfig(legend=self.classification.legend)
        elif name in self.products:
            return self.products[name]
        raise ConfigError(
            f"unknown product {name!r}; this project has {', '.join(self.product_names())}", field="products"
        )

    def product_of_legend(self, legend: str) -> str:
        """The first product mapping ``legend`` (the primary product when none does)."""
        return next((p for p in self.product_names() if self.product(p).legend == legend), self.primary_product)

    def for_product(self, name: str) -> ProjectConfig:
        """This config as the stages of product ``name`` see it: its legend and its merged stage options."""
        product = self.product(name)
        if not self.products or name == self.primary_product:
            return self
        return self.model_copy(
            update={
                "classification": ClassificationConfig(legend=product.legend),
                "stages": self._product_stages(name, product),
            }
        )

    @field_validator("seasons")
    @classmethod
    def _season_ids(cls, v: dict[str, SeasonConfig]) -> dict[str, SeasonConfig]:
        for key in v:
            if not re.match(_NAME_PATTERN, key):
                raise ValueError(f"season id {key!r} must be letters, digits, '_', '.' or '-'")
        return v

    def season(self, season_id: str) -> SeasonConfig:
        """The season ``season_id`` (``ConfigError`` naming the known ones if absent)."""
        try:
            return self.seasons[season_id]
        except KeyError:
            raise ConfigError(
                f"unknown season {season_id!r}; this project has {', '.join(self.seasons)}", field="seasons"
            ) from None

    def season_ids_ordered(self) -> list[str]:
        """Season ids sorted by start date."""
        return sorted(self.seasons, key=lambda k: self.seasons[k].start)

    def default_season(self) -> str:
        """The latest season (what a run without an explicit season processes)."""
        return self.season_ids_ordered()[-1]

    def legend(self, which: str | None = None) -> list[LegendClass]:
        """The legend the classifier uses (or the one named)."""
        name = which or self.classification.legend
        classes: list[LegendClass] = getattr(self.legends, name)
        if not classes:
            raise ConfigError(f"legend {name!r} is empty", field=f"legends.{name}")
        return classes

    def resolve_path(self, path: Path | str) -> Path:
        """``path`` made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def storage_root(self) -> str:
        """The storage root as a URI (file:// paths made absolute)."""
        root = self.storage.root
        if root.startswith("s3://"):
            return root.rstrip("/")
        if root.startswith("file://"):
            root = root[len("file://") :]
        return "file://" + str(self.resolve_path(root))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def expand_env(text: str) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; an unset variable without default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default (write ${{{name}:-...}})")

    return _ENV_PATTERN.sub(repl, text)


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: the field's dotted path, then the message."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key (not in the schema; see `lcms config template`)"
        lines.append(f"{loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, path: str = "<config>", base_dir: Path | None = None) -> ProjectConfig:
    """Validate a config mapping; ``ConfigError`` names the file and every bad field."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping", path=path)
    try:
        cfg = ProjectConfig.model_validate({**data, "base_dir": base_dir or Path()})
    except ValidationError as err:
        raise ConfigError("invalid config:\n" + format_validation_error(err), path=path) from err
    return cfg


def load_config(path: str | Path, *, check_files: bool = True) -> ProjectConfig:
    """Read, expand, validate a YAML config; with ``check_files`` also open the AOI.

    Raises :class:`ConfigError` naming the file and the field.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ConfigError("config file not found" if not p.exists() else "not a file", path=str(path))
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not a text file (byte {err.start} is not UTF-8): a config is a YAML text file", path=str(path)
        ) from err
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", path=str(path)) from err
    if "\x00" in raw:
        raise ConfigError("not a text file (it holds NUL bytes): a config is a YAML text file", path=str(path))
    try:
        data = yaml.safe_load(expand_env(raw))
    except ConfigError as err:
        raise ConfigError(str(err), path=str(path)) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"not valid YAML: {where}{problem}", path=str(path)) from err
    cfg = parse_config(data, path=str(path), base_dir=p.parent)
    if check_files:
        from lcms_tasks.grid import load_aoi

        load_aoi(cfg, config_path=str(path))
    return cfg
