"""The run context a stage function receives: config, season, storage, run id."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lcms_tasks.storage import Storage

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.grid import Tile


@dataclass
class RunContext:
    """Everything a stage needs besides the tile: what to run on, and where artefacts live."""

    config: ProjectConfig
    season: str
    run_id: str
    storage: Storage = field(repr=False)
    config_path: str | None = None
    skip_existing: bool = False
    upstream_run_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: The tile subset this run covers (None: every tile of the project). Per-tile stages run on it;
    #: per-season stages (merge, training, reporting) read only these tiles' outputs.
    subset: list[str] | None = None
    #: The map product whose stages this context runs (None: the primary product). Stages of
    #: :data:`lcms_tasks.stages.PRODUCT_STAGES` keep a product's artefacts apart: the primary product's
    #: under ``<season>/<stage>/``, any other's under ``<season>/products/<product>/<stage>/``.
    product: str | None = None
    #: Tiles of the subset this run leaves out, with the reason: gaps an upstream stage run handed on
    #: (its failed tiles, within its tolerance). :meth:`tiles` skips them; reports list them.
    excluded: dict[str, str] = field(default_factory=dict)
    #: The run whose failed tiles this run re-runs (``lcms rerun-failed``), for the run summary.
    rerun_of: str | None = None
    _tiles: list[Tile] | None = field(default=None, init=False, repr=False)
    # The project's config when ``config`` is a product's view of it (see :meth:`for_product`).
    _root_config: ProjectConfig | None = field(default=None, init=False, repr=False)
    _project_tiles: list[Tile] | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(
        cls,
        config: ProjectConfig,
        *,
        season: str | None = None,
        run_id: str | None = None,
        config_path: str | None = None,
        skip_existing: bool = False,
        upstream_run_id: str | None = None,
        params: dict[str, Any] | None = None,
        subset: list[str] | None = None,
        excluded: dict[str, str] | None = None,
        rerun_of: str | None = None,
    ) -> RunContext:
        season_id = season or config.default_season()
        config.season(season_id)  # fail early, naming the known seasons
        storage = Storage(
            config.storage_root,
            s3_endpoint_url=config.storage.s3_endpoint_url,
            compress_arrays=config.storage.compress_arrays,
        )
        return cls(
            config=config,
            season=season_id,
            run_id=run_id or f"manual__{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}",
            storage=storage,
            config_path=config_path,
            skip_existing=skip_existing,
            upstream_run_id=upstream_run_id,
            params=dict(params or {}),
            subset=list(dict.fromkeys(subset)) if subset else None,
            excluded=dict(excluded or {}),
            rerun_of=rerun_of,
        )

    def project_tiles(self) -> list[Tile]:
        """Every tile of the project (the AOI is read once per context)."""
        if self._project_tiles is None:
            from lcms_tasks.grid import project_tiles

            self._project_tiles = project_tiles(self.config)
        return self._project_tiles

    def tiles(self, *, include_excluded: bool = False) -> list[Tile]:
        """The tiles this run covers: the subset (or every tile) less the excluded ones.

        ``ConfigError`` for ids not in the grid. ``include_excluded``: the subset as asked for, gaps included.
        """
        if self._tiles is None:
            from lcms_tasks.grid import select_tiles

            self._tiles = select_tiles(self.project_tiles(), self.subset)
        if include_excluded or not self.excluded:
            return self._tiles
        return [t for t in self._tiles if t.id not in self.excluded]

    def with_excluded(self, more: dict[str, str]) -> RunContext:
        """This run with the tiles of ``more`` left out as well (their reasons kept)."""
        if not more:
            return self
        other = dataclasses.replace(self, excluded={**self.excluded, **more})
        other._root_config = self._root_config
        other._project_tiles = self._project_tiles
        other._tiles = self._tiles
        return other

    @property
    def is_subset(self) -> bool:
        """True when the run was asked for part of the project's tiles (gaps left by failures aside)."""
        return bool(self.subset) and len(self.tiles(include_excluded=True)) < len(self.project_tiles())

    def coverage(self) -> dict[str, Any]:
        """What a per-season artefact covers: the tile subset (None: all), the gaps and the counts."""
        return {
            "tile_subset": [t.id for t in self.tiles(include_excluded=True)] if self.is_subset else None,
            "n_tiles": len(self.tiles()),
            "n_project_tiles": len(self.project_tiles()),
            "excluded": dict(sorted(self.excluded.items())),
        }

    # -- products -----------------------------------------------------------------------------------

    @property
    def product_name(self) -> str:
        """The product this context maps (the primary one unless :meth:`for_product` chose another)."""
        return self.product or self.config.primary_product

    @property
    def is_primary_product(self) -> bool:
        """True for the primary product: the one change detection and the operator application work on."""
        return self.product_name == self.config.primary_product

    def for_product(self, name: str) -> RunContext:
        """This run as product ``name``'s stages see it (its legend, options and artefact folders)."""
        if name == self.product_name:
            return self
        root_config = self._root_config or self.config
        other = dataclasses.replace(self, config=root_config.for_product(name), product=name)
        other._root_config = root_config
        other._project_tiles = self._project_tiles
        other._tiles = self._tiles
        return other

    def contexts_for(self, stage: str) -> list[RunContext]:
        """The contexts ``stage`` runs in: one per product (in order) for a product stage, else this one."""
        from lcms_tasks.stages import PRODUCT_STAGES

        if stage not in PRODUCT_STAGES:
            return [self]
        return [self.for_product(name) for name in (self._root_config or self.config).product_names()]

    def stage_parts(self, stage: str, product: str | None = None) -> list[str]:
        """The folder of ``stage`` below the season as path parts (``products/<product>/<stage>`` for a
        product stage of a product other than the primary one)."""
        from lcms_tasks.stages import PRODUCT_STAGES

        name = product or self.product_name
        if stage in PRODUCT_STAGES and name != self.config.primary_product:
            return ["products", name, stage]
        return [stage]

    def tile_uri(self, stage: str, tile_id: str, season: str | None = None, *, product: str | None = None) -> str:
        """URI of ``stage``'s output for one tile (of this context's product, or of ``product``)."""
        return self.storage.uri(self.config.project, season or self.season, *self.stage_parts(stage, product), tile_id)

    def stage_uri(self, stage: str, season: str | None = None, *, product: str | None = None) -> str:
        return self.storage.uri(self.config.project, season or self.season, *self.stage_parts(stage, product))

    def run_uri(self, stage: str, *parts: str, season: str | None = None, product: str | None = None) -> str:
        """URI of a run-level artefact of ``stage`` (not per tile): ``<stage>/_run/...``."""
        return self.storage.uri(
            self.config.project, season or self.season, *self.stage_parts(stage, product), "_run", *parts
        )

    def marker_meta(self, stage: str, tile_id: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        """Completion-marker metadata: who wrote this, in which run, plus the stage's own figures."""
        return {
            "stage": stage,
            "tile": tile_id,
            "project": self.config.project,
            "season": self.season,
            "run_id": self.run_id,
            "product": self.product_name,
            "upstream_run_id": self.upstream_run_id,
            "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **extra,
        }
