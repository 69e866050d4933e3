"""Shared pieces of the publish tests: a fabricated upstream for a 2 x 2-tile project and an offline STAC validator.

:func:`fabricate_upstream` writes what the publish stage reads (post-processed maps, prediction
markers, change tables made by the change stage's own functions) without running the chain, so the
unit tests publish a whole project in a second. :class:`OfflineValidator` validates STAC objects
against pystac's bundled core schemas and the extension schemas vendored in ``tests/data/stac_schemas``
(see its README), and refuses to fetch anything else. The tests at the bottom check the validator
itself: it really applies the extension schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pystac.validation import JsonSchemaSTACValidator, validate_dict
from pystac.validation.stac_validator import GetSchemaError

from lcms_tasks import eopatch
from lcms_tasks.changes import detect_changes, resolve_transitions, vectorise_changes, write_changes
from lcms_tasks.config import ProjectConfig, load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import Tile
from tests.conftest import base_config, write_aoi

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "stac_schemas"
EXTENSIONS_URL = "https://stac-extensions.github.io/"
#: Extension schemas no registry package ships (see tests/data/stac_schemas/README.md): not validated.
NOT_VENDORED = {"https://stac-extensions.github.io/processing/v1.2.0/schema.json"}


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator with the vendored extension schemas and no network."""

    def __init__(self) -> None:
        super().__init__()
        for path in sorted(SCHEMAS.rglob("schema.json")):
            self.schema_cache[EXTENSIONS_URL + path.relative_to(SCHEMAS).as_posix()] = json.loads(path.read_text())

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise GetSchemaError(schema_uri, LookupError("not vendored in tests/data/stac_schemas (offline)"))
        schema: dict[str, Any] = self.schema_cache[schema_uri]
        return schema


def validate_stac_folder(folder: Path, validator: OfflineValidator | None = None) -> dict[str, list[str]]:
    """Validate every JSON file under ``folder``; {file: schemas validated against}. Raises on the first error."""
    validator = validator or OfflineValidator()
    out: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        declared = list(data.get("stac_extensions", []))
        unknown = [e for e in declared if e not in validator.schema_cache and e not in NOT_VENDORED]
        assert not unknown, f"{path} declares extensions with no vendored schema: {unknown}"
        extensions = [e for e in declared if e not in NOT_VENDORED]
        out[str(path.relative_to(folder))] = validate_dict(
            data, extensions=extensions, href=str(path), validator=validator
        )
    return out


# -- a fabricated upstream -------------------------------------------------------------------------


def write_project(folder: Path, *, storage_root: str = "data", stages: dict[str, Any] | None = None) -> Path:
    """A 2 x 2-tile project (64 px tiles at 20 m, seasons 2023 and 2024) whose publish stage skips the store."""
    write_aoi(folder / "aoi.geojson")
    cfg = base_config("aoi.geojson", storage_root)
    cfg["stages"] = {"publish": {"change_store": False}, **(stages or {})}
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _maps(tile: Tile, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(before, after, conf_before, conf_after) of a tile: class blocks, a no-data strip, known changes."""
    rng = np.random.default_rng(seed)
    h, w = tile.shape
    coarse = rng.choice([1, 2, 3, 7], size=(h // 8, w // 8))
    before = np.kron(coarse, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    before[:, :2] = 0  # a swath edge without data
    after = before.copy()
    after[8:24, 8:24] = np.where(before[8:24, 8:24] == 2, 1, after[8:24, 8:24])  # forest -> cropland
    after[40:56, 32:48] = 5  # anything -> built-up
    conf_b = rng.uniform(0.6, 1.0, size=(h, w)).astype(np.float32)
    conf_a = rng.uniform(0.6, 1.0, size=(h, w)).astype(np.float32)
    conf_a[0, 5] = np.nan
    return before, after, conf_b, conf_a


def fabricate_upstream(cfg: ProjectConfig, season: str, *, before_season: str | None = None, seed: int = 0) -> None:
    """Write postprocessing, prediction (marker) and change_detection outputs of every tile for ``season``."""
    ctx = RunContext.create(cfg, season=season, run_id=f"up-{season}")
    names = {c.id: c.name for c in cfg.legend()}
    transitions = resolve_transitions(cfg.stages.change_detection.transitions, names, strict=False)
    for k, tile in enumerate(ctx.tiles()):
        before, after, conf_b, conf_a = _maps(tile, seed + k)
        patch = eopatch.new_patch(tile, [])
        patch.mask_timeless["CLASS"] = after[..., None]
        patch.data_timeless["CONFIDENCE"] = conf_a[..., None]
        eopatch.save(
            ctx.storage,
            ctx.tile_uri("postprocessing", tile.id),
            patch,
            meta=ctx.marker_meta("postprocessing", tile.id, {"upstream": f"pred-{season}"}),
        )
        pred_meta = {"model_run_id": "model-run-1", "model_uri": "x", "model_season": "2023", "upstream": "feat-1"}
        with ctx.storage.writing_dir(
            ctx.tile_uri("prediction", tile.id), ctx.marker_meta("prediction", tile.id, pred_meta)
        ):
            pass
        labels, regions = detect_changes(before, after, conf_b, conf_a, transitions, 4, 0.0)
        frame = vectorise_changes(
            labels,
            regions,
            tile.transform(),
            tile.crs,
            class_names=names,
            tile_id=tile.id,
            season_before=before_season or "none",
            season_after=season,
        )
        cd_meta = ctx.marker_meta("change_detection", tile.id, {"season_before": before_season})
        with ctx.storage.writing_dir(ctx.tile_uri("change_detection", tile.id), cd_meta) as folder:
            write_changes(frame, folder / "changes.gpkg")


def published_project(folder: Path, *, storage_root: str = "data", seasons: tuple[str, ...] = ("2023",)) -> Path:
    """The project of :func:`write_project` with the upstream of ``seasons`` fabricated; returns the config path."""
    path = write_project(folder, storage_root=storage_root)
    cfg = load_config(path)
    previous = None
    for season in seasons:
        fabricate_upstream(cfg, season, before_season=previous)
        previous = season
    return path


# -- the validator itself --------------------------------------------------------------------------


def _item() -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": "x",
        "geometry": {"type": "Point", "coordinates": [1.0, 2.0]},
        "bbox": [1.0, 2.0, 1.0, 2.0],
        "properties": {"datetime": "2024-01-01T00:00:00Z"},
        "links": [],
        "assets": {
            "a": {
                "href": "a.tiff",
                "raster:bands": [{"data_type": "uint8", "nodata": 0}],
                "classification:classes": [{"value": 1, "name": "forest", "color_hint": "1E8449"}],
            }
        },
    }


def test_offline_validator_applies_the_vendored_extension_schemas() -> None:
    validator = OfflineValidator()
    assert validate_dict(_item(), validator=validator)[1:] == _item()["stac_extensions"]
    bad_name = _item()
    bad_name["assets"]["a"]["classification:classes"][0]["name"] = "bare land"  # a space: not a valid class name
    with pytest.raises(Exception, match="classification"):
        validate_dict(bad_name, validator=validator)
    bad_type = _item()
    bad_type["assets"]["a"]["raster:bands"][0]["data_type"] = "byte"
    with pytest.raises(Exception, match="raster"):
        validate_dict(bad_type, validator=validator)


def test_offline_validator_never_fetches() -> None:
    item = _item()
    item["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    with pytest.raises(GetSchemaError, match="not vendored"):
        validate_dict(item, validator=OfflineValidator())


def test_vendored_schemas_are_recorded_in_the_readme() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    for path in SCHEMAS.rglob("schema.json"):
        rel = path.relative_to(SCHEMAS).as_posix()
        assert rel in readme, f"{rel} is vendored but not described in {SCHEMAS / 'README.md'}"
        assert json.loads(path.read_text())["$id"].startswith(EXTENSIONS_URL + rel)
