"""The real-data Slovenia project (configs/slovenia.yaml) through the whole chain, imagery imported from an EOPatch.

download (import) -> features -> add_reference -> sampling -> merge_features -> training ->
prediction -> postprocessing -> reporting, run through ``lcms_tasks.runner`` on a temporary copy of
the shipped config whose paths point at ../shared/data and whose storage is in a temporary folder.
The checks compare what the stages stored with the EOPatch itself, mapped onto the tile grid here by
plain arithmetic (independently of the import source's rasterio resampling).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lcms_tasks import eopatch
from lcms_tasks.config import ProjectConfig, load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import Tile, project_tiles
from lcms_tasks.runner import run_stage, run_tiles

pytestmark = pytest.mark.realdata
log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PATCH_DIR = DATA_DIR / "slovenia_2015_s2l1c_5dates"
CONFIG = REPO / "configs" / "slovenia.yaml"
SEASON = "2015"
CLEAR_DATES = [dt.date(2015, 7, 11), dt.date(2015, 8, 30), dt.date(2015, 9, 9)]  # the other two are all cloud


def _require_data() -> None:
    if not PATCH_DIR.is_dir():
        pytest.skip(f"real data folder {PATCH_DIR} is absent (expected beside the repository as shared/data)")


@dataclass
class Project:
    """The chain's outputs: config, run context, tiles, the source EOPatch."""

    cfg: ProjectConfig
    ctx: RunContext
    tiles: list[Tile]
    patch: Any  # eolearn EOPatch of the source

    def pixel_map(self, tile: Tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside, row, col): the source pixel under each tile pixel's centre (nearest neighbour)."""
        bbox = self.patch.bbox
        h, w = self.patch.data["BANDS-S2-L1C"].shape[1:3]
        rr, cc = np.mgrid[0 : tile.size_px, 0 : tile.size_px]
        xs, ys = tile.transform() * (cc + 0.5, rr + 0.5)
        col = np.floor((xs - bbox.min_x) / ((bbox.max_x - bbox.min_x) / w)).astype(int)
        row = np.floor((bbox.max_y - ys) / ((bbox.max_y - bbox.min_y) / h)).astype(int)
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        return inside, np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)


def config_copy(folder: Path) -> Path:
    """configs/slovenia.yaml with absolute data paths and storage under ``folder``."""
    text = CONFIG.read_text(encoding="utf-8").replace("${LCMS_STORAGE_ROOT:-../lcms-data}", str(folder / "store"))
    data = yaml.safe_load(text)
    data["aoi"]["file"] = str(CONFIG.parent / data["aoi"]["file"])
    data["source"]["path"] = str(PATCH_DIR)
    for source in data["stages"]["add_reference"]["sources"]:
        source["path"] = str(PATCH_DIR / "vector_timeless" / Path(source["path"]).name)
    path = folder / "slovenia.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    _require_data()
    from eolearn.core import EOPatch

    cfg = load_config(config_copy(tmp_path_factory.mktemp("slovenia")))
    ctx = RunContext.create(cfg, season=SEASON, run_id="slovenia_test")
    tiles = project_tiles(cfg)
    for stage in ("download", "features", "add_reference", "sampling"):
        run_tiles(stage, tiles, ctx)
    for stage in ("merge_features", "training"):
        run_stage(stage, ctx)
    for stage in ("prediction", "postprocessing"):
        run_tiles(stage, tiles, ctx)
    run_stage("reporting", ctx)
    return Project(cfg, ctx, tiles, EOPatch.load(str(PATCH_DIR)))


def test_shipped_config_points_beside_the_repository() -> None:
    _require_data()
    cfg = load_config(CONFIG)
    assert cfg.source.type == "import" and cfg.source.format == "eopatch"
    from lcms_tasks.sources.import_source import ImportSource

    assert ImportSource(cfg).root(SEASON) == PATCH_DIR.resolve()
    reference = cfg.stages.add_reference.sources[0]
    assert reference.type == "file" and cfg.resolve_path(reference.path).is_file()
    assert len(project_tiles(cfg)) >= 9 and cfg.grid.crs == 32633
    lcms = Path(sys.executable).with_name("lcms")
    proc = subprocess.run(
        [str(lcms), "config", "validate", str(CONFIG)], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_download_holds_the_real_reflectances(project: Project) -> None:
    bands = project.patch.data["BANDS-S2-L1C"]
    is_data = project.patch.mask["IS_DATA"][..., 0].astype(bool)
    clm = project.patch.mask["CLM"][..., 0].astype(bool)
    covered = 0
    for tile in project.tiles:
        patch, meta = eopatch.load(project.ctx.storage, project.ctx.tile_uri("download", tile.id))
        assert [t.date() for t in patch.timestamps] == [t.date() for t in project.patch.timestamps]
        assert meta["band_names"][7] == "B08" and meta["quantification"] == 10000.0
        inside, row, col = project.pixel_map(tile)
        data = patch.mask["IS_DATA"][..., 0]
        np.testing.assert_array_equal(data, inside[None] & is_data[:, row, col])
        expected = np.rint(bands[:, row, col].astype(np.float64) * 10000).astype(np.uint16)
        dn = patch.data["BANDS"]
        assert dn.dtype == np.uint16
        np.testing.assert_array_equal(dn[data], expected[data])
        assert (dn[~data] == 0).all()
        np.testing.assert_array_equal(patch.mask["CLM"][..., 0], data & clm[:, row, col])
        covered += int(inside.sum())
    assert covered == bands.shape[1] * bands.shape[2]  # every source pixel lands on exactly one tile pixel


def test_features_ndvi_matches_the_patch(project: Project) -> None:
    ndvi = project.patch.data["NDVI"][..., 0]
    source_dates = [t.date() for t in project.patch.timestamps]
    compared = 0
    for tile in project.tiles:
        feats, meta = eopatch.load(project.ctx.storage, project.ctx.tile_uri("features", tile.id))
        down, _ = eopatch.load(project.ctx.storage, project.ctx.tile_uri("download", tile.id))
        names = meta["feature_names"]
        feature_dates = [t.date() for t in feats.timestamps]
        assert sorted(meta["quality"]["dropped_dates"]) == ["2015-07-31", "2015-08-20"]
        inside, row, col = project.pixel_map(tile)
        for date in CLEAR_DATES:
            k, t = feature_dates.index(date), source_dates.index(date)
            valid = down.mask["IS_VALID"][t, ..., 0]
            ours = feats.data["FEATURES"][k, ..., names.index("NDVI")]
            theirs = ndvi[t][row, col]
            assert np.isfinite(ours[valid]).all()
            np.testing.assert_allclose(ours[valid], theirs[valid], rtol=0, atol=1e-3)
            compared += int(valid.sum())
        no_data = feats.mask_timeless["NO_DATA"][..., 0]
        np.testing.assert_array_equal(no_data, ~inside)
    assert compared > 2.5 * 10100  # three clear dates over the 101 x 100 patch, minus dilated cloud edges


def test_reference_agrees_with_the_lulc_raster(project: Project) -> None:
    lulc = project.patch.mask_timeless["LULC"][..., 0].astype(int)
    agree = labelled = 0
    for tile in project.tiles:
        ref, meta = eopatch.load(project.ctx.storage, project.ctx.tile_uri("add_reference", tile.id))
        inside, row, col = project.pixel_map(tile)
        ours = ref.mask_timeless["REFERENCE"][..., 0].astype(int)[inside]
        theirs = lulc[row, col][inside]
        agree += int((ours == theirs).sum())
        labelled += ours.size
        assert set(map(int, meta["class_pixels"])) <= {1, 2, 3, 4, 8}
    share = agree / labelled
    log.info("reference agrees with mask_timeless/LULC on %.4f of %d pixels", share, labelled)
    assert labelled == 10100 and share >= 0.95


def _dataset(project: Project) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    uri = project.ctx.run_uri("merge_features", "dataset")
    meta = project.ctx.storage.read_marker(uri)
    with project.ctx.storage.reading_dir(uri) as folder, np.load(folder / "dataset.npz") as npz:
        return {k: npz[k] for k in npz.files}, meta


def test_test_split_is_spatially_held_out(project: Project) -> None:
    data, meta = _dataset(project)
    split = data["split"]
    assert {0, 1, 2} <= set(np.unique(split).tolist())
    # Whole tiles are held out: the test tiles are not train tiles (the forest polygon spanning every tile is
    # cut at tile edges; polygons spanning at most two tiles keep their tiles together).
    assert meta["grouping"] == "tile_block"
    tiles = {s: set(data["tile"][split == s].tolist()) for s in (0, 1, 2)}
    assert tiles[2] and not tiles[0] & tiles[2] and not tiles[0] & tiles[1]
    log.info("train tiles %s, test tiles %s", sorted(tiles[0]), sorted(tiles[2]))
    pixels = {
        s: set(zip(data["tile"][split == s], data["row"][split == s], data["col"][split == s], strict=True))
        for s in (0, 2)
    }
    assert not pixels[0] & pixels[2]
    assert len(np.unique(data["y"][split == 2])) >= 2


def test_model_and_report_metrics_are_sane(project: Project) -> None:
    data, meta = _dataset(project)
    n_test = int((data["split"] == 2).sum())
    assert n_test == meta["n_per_split"]["test"] > 0
    model_meta = project.ctx.storage.read_marker(project.ctx.run_uri("training", "model"))
    with project.ctx.storage.reading_dir(project.ctx.run_uri("reporting", "report")) as folder:
        report = json.loads((folder / "report.json").read_text())
        assert (folder / "report.html").is_file()
    metrics = report["metrics"]
    log.info("Slovenia test metrics: %s", json.dumps(metrics))
    assert 0.0 < metrics["overall_accuracy"] <= 1.0
    assert -1.0 <= metrics["kappa"] <= 1.0
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"])
    assert matrix.shape == (len(metrics["confusion_matrix"]["class_ids"]),) * 2
    assert int(matrix.sum()) == n_test == metrics["n_pixels"]
    assert np.isclose(np.trace(matrix) / matrix.sum(), metrics["overall_accuracy"])
    for figures in metrics["per_class"].values():
        assert all(0.0 <= figures[k] <= 1.0 for k in ("precision", "recall", "f1"))
    assert model_meta["metrics"]["overall_accuracy"] == metrics["overall_accuracy"]
    # The mapped classes: the model's classes where there is imagery, 0 (no data) elsewhere.
    model_classes = set(model_meta["label_encoding"]["class_ids"]) | {0}
    assert len(model_classes) >= 3
    for tile in project.tiles:
        post, _ = eopatch.load(project.ctx.storage, project.ctx.tile_uri("postprocessing", tile.id))
        feats, _ = eopatch.load(project.ctx.storage, project.ctx.tile_uri("features", tile.id))
        classes = post.mask_timeless["CLASS"][..., 0]
        assert set(np.unique(classes).tolist()) <= model_classes
        np.testing.assert_array_equal(classes == 0, feats.mask_timeless["NO_DATA"][..., 0])
