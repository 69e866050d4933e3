"""The reporting stage on damaged and on normal inputs: corrupt files are listed, normal runs are quiet.

A corrupt input (a file of a complete artefact that is truncated, or a gzip cut short) is reported with
its file and problem and the tile counted as missing that input; the report fails only when no tile has
a readable map. A normal run logs no warning and emits no Python warning, and names classes, not ids.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import base_config, write_aoi
from tests.unit.test_reporting import Fixture, html_text, raw_keys

TILE_PX = 64


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _array_file(folder: Path, feature: str) -> Path:
    """The stored file of ``feature`` ("mask_timeless/CLASS"): .npy, or .npy.gz when compressed."""
    for suffix in (".npy", ".npy.gz"):
        if (folder / f"{feature}{suffix}").is_file():
            return folder / f"{feature}{suffix}"
    raise AssertionError(f"no file for {feature} in {folder}")


class Damaged:
    """A 2 x 2-tile project whose maps and features are written by hand, then some of them damaged."""

    def __init__(self, root: Path, *, compress: bool) -> None:
        from lcms_tasks import eopatch
        from lcms_tasks.config import load_config
        from lcms_tasks.context import RunContext

        write_aoi(root / "aoi.geojson")
        raw = base_config("aoi.geojson", "data", tile_px=TILE_PX)
        raw["storage"]["compress_arrays"] = compress
        (root / "project.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        self.cfg = load_config(root / "project.yaml")
        self.ctx = RunContext.create(self.cfg, season="2023", run_id="rep-damaged")
        self.tiles = self.ctx.tiles()
        ctx, store = self.ctx, self.ctx.storage
        # Random values, so a compressed file cut in half still holds its header (a constant array
        # compresses to a few dozen bytes).
        rng = np.random.default_rng(5)
        for k, tile in enumerate(self.tiles):
            stages = ["postprocessing", "prediction"] if k == 0 else ["postprocessing"]
            for stage in stages:
                patch = eopatch.new_patch(tile, [])
                patch.mask_timeless["CLASS"] = rng.integers(1, 5, (*tile.shape, 1), dtype=np.uint8)
                patch.data_timeless["CONFIDENCE"] = rng.random((*tile.shape, 1), dtype=np.float32)
                eopatch.save(store, ctx.tile_uri(stage, tile.id), patch, meta=ctx.marker_meta(stage, tile.id, {}))
            fpatch = eopatch.new_patch(tile, [])
            fpatch.mask_timeless["VALID_COUNT"] = rng.integers(0, 30, (*tile.shape, 1), dtype=np.uint16)
            eopatch.save(
                store,
                ctx.tile_uri("features", tile.id),
                fpatch,
                meta=ctx.marker_meta("features", tile.id, {"quality": {"dates_total": 10, "dates_dropped": 1}}),
            )

    def folder(self, stage: str, k: int) -> Path:
        return self.ctx.storage.local_path(self.ctx.tile_uri(stage, self.tiles[k].id))


@pytest.mark.parametrize("compress", [False, True], ids=["npy", "npy.gz"])
def test_corrupt_inputs_are_listed_not_fatal(tmp_path: Path, compress: bool, caplog: pytest.LogCaptureFixture) -> None:
    from lcms_tasks.errors import StageError
    from lcms_tasks.stages import reporting

    p = Damaged(tmp_path, compress=compress)
    t = [tile.id for tile in p.tiles]
    # Tile 0: post-processed map truncated, the raw prediction is there. Tile 1: its only map truncated.
    # Tile 2: features truncated. Tile 3: the map's confidence truncated (the class map itself is fine).
    damaged = {
        ("postprocessing", 0): _array_file(p.folder("postprocessing", 0), "mask_timeless/CLASS"),
        ("postprocessing", 1): _array_file(p.folder("postprocessing", 1), "mask_timeless/CLASS"),
        ("features", 2): _array_file(p.folder("features", 2), "mask_timeless/VALID_COUNT"),
        ("postprocessing", 3): _array_file(p.folder("postprocessing", 3), "data_timeless/CONFIDENCE"),
    }
    for path in damaged.values():
        _truncate(path)
    caplog.set_level(logging.WARNING)
    reporting.run(p.ctx)
    folder = p.ctx.storage.local_path(p.ctx.run_uri("reporting", "report"))
    rep = json.loads((folder / "report.json").read_text())

    assert rep["run"]["map_sources"] == {"prediction": 1, "missing": 1, "postprocessing": 2}
    tiles = {r["id"]: r for r in rep["tiles"]}
    assert tiles[t[0]]["map_source"] == "prediction" and tiles[t[1]]["map_source"] == "missing"
    assert tiles[t[3]]["map_source"] == "postprocessing" and tiles[t[3]]["mean_confidence"] is None
    assert rep["missing_inputs"]["postprocessing"] == sorted([t[0], t[1]])
    assert rep["missing_inputs"]["features"] == [t[2]]
    # Areas still add up over the 4 tiles (the tile without a readable map counts as no data).
    tile_km2 = (TILE_PX * p.cfg.grid.resolution_m) ** 2 / 1e6
    assert rep["total"]["area_km2"] == pytest.approx(4 * tile_km2)
    assert rep["total"]["quality"]["n_tiles"] == 3

    corrupt = {(c["stage"], c["tile"]): c for c in rep["corrupt_inputs"]}
    assert set(corrupt) == {(stage, t[k]) for stage, k in damaged}
    for (stage, k), path in damaged.items():
        entry = corrupt[(stage, t[k])]
        rel = path.relative_to(p.folder(stage, k)).as_posix()
        assert entry["file"] == f"{p.ctx.tile_uri(stage, t[k])}/{rel}"
        if compress:
            assert entry["problem"].startswith("gzip cut short or corrupt: header says (64, 64, 1) ")
        else:
            nbytes = TILE_PX * TILE_PX * (4 if "CONFIDENCE" in rel else 2 if "VALID" in rel else 1)
            assert re.fullmatch(
                rf"truncated: header says \(64, 64, 1\) \w+ = {nbytes} bytes of data, the file holds \d+",
                entry["problem"],
            )
    # Each corrupt input is one warning naming the tile, the file and the problem.
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 4 and all("corrupt" in m and "header says" in m for m in warned)

    page = (folder / "report.html").read_text()
    text = html_text(page)
    assert "Corrupt inputs" in text
    for entry in rep["corrupt_inputs"]:
        assert entry["file"] in text and entry["problem"] in text
    run_ids = [rep["run"]["run_id"], *[r for ids in rep["run"]["upstream_run_ids"].values() for r in ids]]
    assert raw_keys(page, run_ids) == []

    # No readable map at all: the stage fails, saying the maps are corrupt and naming one.
    _truncate(_array_file(p.folder("postprocessing", 2), "mask_timeless/CLASS"))
    _truncate(_array_file(p.folder("postprocessing", 3), "mask_timeless/CLASS"))
    _truncate(_array_file(p.folder("prediction", 0), "mask_timeless/CLASS"))
    with pytest.raises(StageError, match=r"has a readable map.*4 tile\(s\) have a corrupt one, e\.g\. .*CLASS\.npy"):
        reporting.build_report(p.ctx)


def test_unreadable_change_polygons_are_a_corrupt_input(tmp_path: Path) -> None:
    from lcms_tasks.stages import reporting

    p = Damaged(tmp_path, compress=False)
    tile = p.tiles[1]
    uri = p.ctx.tile_uri("change_detection", tile.id)
    with p.ctx.storage.writing_dir(uri, p.ctx.marker_meta("change_detection", tile.id, {})) as staging:
        (staging / "changes.gpkg").write_bytes(b"SQLite format 3\0 cut short")
    rep, *_ = reporting.build_report(p.ctx)
    assert rep["corrupt_inputs"] == [
        {
            "stage": "change_detection",
            "tile": tile.id,
            "file": f"{uri}/changes.gpkg",
            "problem": rep["corrupt_inputs"][0]["problem"],
        }
    ]
    assert rep["corrupt_inputs"][0]["problem"].startswith("unreadable: ")
    assert tile.id in rep["missing_inputs"]["change_detection"]


def test_a_normal_run_is_quiet_and_names_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Synthetic truth (vector features through eo-learn), plots, a dropped class: no warning of any kind."""
    from lcms_tasks.stages import reporting

    fixture = Fixture(tmp_path)
    caplog.set_level(logging.INFO)
    caplog.clear()  # writing the fixture's vector features is not the reporting stage's doing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reporting.run(fixture.ctx)
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught] == []
    noisy = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []
    own = [r.getMessage() for r in caplog.records if r.name == "lcms_tasks.stages.reporting"]
    assert any("shrubland" in m and "dropped from training" in m for m in own)
    # Class ids only where the legend has no name: never 'class 7' for shrubland.
    assert not [m for m in own if re.search(r"\bclass(es)? \d", m)]
