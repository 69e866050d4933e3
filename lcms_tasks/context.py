"""The run context a stage function receives: config, season, storage, run id."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lcms_tasks.storage import Storage

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig


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
        )

    def tile_uri(self, stage: str, tile_id: str, season: str | None = None) -> str:
        return self.storage.tile_uri(self.config.project, season or self.season, stage, tile_id)

    def stage_uri(self, stage: str, season: str | None = None) -> str:
        return self.storage.stage_uri(self.config.project, season or self.season, stage)

    def run_uri(self, stage: str, *parts: str, season: str | None = None) -> str:
        """URI of a run-level artefact of ``stage`` (not per tile): ``<stage>/_run/...``."""
        return self.storage.uri(self.config.project, season or self.season, stage, "_run", *parts)

    def marker_meta(self, stage: str, tile_id: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        """Completion-marker metadata: who wrote this, in which run, plus the stage's own figures."""
        return {
            "stage": stage,
            "tile": tile_id,
            "project": self.config.project,
            "season": self.season,
            "run_id": self.run_id,
            "upstream_run_id": self.upstream_run_id,
            "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **extra,
        }
