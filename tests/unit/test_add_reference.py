"""add_reference: rasterisation, overlaps, erosion, crosswalks, file errors, the stage on the fixture project."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import yaml
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from shapely.geometry import box

from lcms_tasks.config import LegendClass, ProjectConfig, load_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import ConfigError, StageError
from lcms_tasks.grid import Tile, project_tiles
from lcms_tasks.reference.rasterize import LabelledPolygon, rasterize_reference, samplable_mask
from lcms_tasks.reference.sources import (
    SourceStats,
    build_crosswalk,
    code_key,
    file_polygons,
    labels_for_codes,
    read_crosswalk_csv,
    read_reference_file,
    synthetic_tiles,
)
from lcms_tasks.stages import add_reference

# A 10 x 10 grid of 1 m pixels with its top-left corner at (0, 10).
GRID = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 10.0)
LEGEND = [LegendClass(id=1, name="cropland"), LegendClass(id=2, name="forest"), LegendClass(id=3, name="water")]


def _poly(x0: float, y0: float, x1: float, y1: float, label: int, priority: int = 0, key: int = 0) -> LabelledPolygon:
    return LabelledPolygon(box(x0, y0, x1, y1), label, priority, key)


# -- rasterisation ----------------------------------------------------------------------------------


def test_rasterize_burns_pixel_centres_only() -> None:
    # x 2.4..5.6 covers the centres 2.5, 3.5, 4.5, 5.5 (columns 2-5); y 6..10 covers rows 0-3.
    ref = rasterize_reference([_poly(2.4, 6.0, 5.6, 10.0, 2)], (10, 10), GRID)
    expected = np.zeros((10, 10), np.uint8)
    expected[0:4, 2:6] = 2
    np.testing.assert_array_equal(ref.labels, expected)
    np.testing.assert_array_equal(ref.polygon_index > 0, expected > 0)
    assert ref.stats["overlap_pixels"] == 0


def test_overlap_priority_higher_wins_and_ties_drop() -> None:
    low = _poly(0, 0, 6, 10, 1, priority=0)
    high = _poly(4, 0, 10, 10, 2, priority=5)
    ref = rasterize_reference([low, high], (10, 10), GRID, "priority")
    assert (ref.labels[:, :4] == 1).all() and (ref.labels[:, 4:] == 2).all()
    assert (ref.polygon_index[:, 4:] == 2).all()  # the winning polygon's index
    assert ref.stats == {
        "overlap_pixels": 20,
        "conflict_pixels": 20,
        "conflict_resolved_pixels": 20,
        "conflict_dropped_pixels": 0,
    }
    # Same priority, different classes: a tie, the overlap stays unlabelled.
    tie = rasterize_reference([low, _poly(4, 0, 10, 10, 2, priority=0)], (10, 10), GRID, "priority")
    assert (tie.labels[:, 4:6] == 0).all() and (tie.polygon_index[:, 4:6] == 0).all()
    assert tie.stats["conflict_dropped_pixels"] == 20


def test_overlap_drop_rule_ignores_priority_and_same_class_overlap_is_kept() -> None:
    ref = rasterize_reference([_poly(0, 0, 6, 10, 1, 0), _poly(4, 0, 10, 10, 2, 9)], (10, 10), GRID, "drop")
    assert (ref.labels[:, 4:6] == 0).all() and (ref.labels[:, :4] == 1).all() and (ref.labels[:, 6:] == 2).all()
    assert ref.stats["conflict_dropped_pixels"] == 20
    same = rasterize_reference([_poly(0, 0, 6, 10, 3), _poly(4, 0, 10, 10, 3)], (10, 10), GRID, "drop")
    assert (same.labels == 3).all()
    assert same.stats["overlap_pixels"] == 20 and same.stats["conflict_pixels"] == 0


def test_rasterize_rejects_labels_outside_the_legend_range() -> None:
    with pytest.raises(ValueError, match="300"):
        rasterize_reference([_poly(0, 0, 5, 5, 300)], (10, 10), GRID)


# -- erosion ----------------------------------------------------------------------------------------


def test_samplable_erodes_polygon_borders_but_not_the_tile_edge() -> None:
    ref = rasterize_reference([_poly(0, 0, 5, 10, 1), _poly(5, 0, 10, 10, 1)], (10, 10), GRID)
    samplable = samplable_mask(ref.labels, ref.polygon_index, erosion_px=1)
    # Same class on both sides, but two polygons: columns 4 and 5 (their shared edge) are eroded.
    assert not samplable[:, 4:6].any()
    assert samplable[:, :4].all() and samplable[:, 6:].all()  # tile edges are not borders
    assert samplable_mask(ref.labels, ref.polygon_index, erosion_px=0).all()


def test_samplable_per_class_erosion_unlabelled_and_no_data() -> None:
    ref = rasterize_reference([_poly(0, 0, 4, 10, 1), _poly(6, 0, 10, 10, 2)], (10, 10), GRID)
    no_data = np.zeros((10, 10), bool)
    no_data[0, 0] = True
    samplable = samplable_mask(ref.labels, ref.polygon_index, 1, {2: 2}, no_data=no_data)
    assert not samplable[:, 4:6].any()  # unlabelled gap
    assert not samplable[:, 3].any() and samplable[1:, :3].all()  # class 1: 1 px from the gap
    assert not samplable[:, 6:8].any() and samplable[:, 8:].all()  # class 2: 2 px
    assert not samplable[0, 0]


@settings(max_examples=40, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(
            st.integers(0, 9),
            st.integers(0, 9),
            st.integers(1, 6),
            st.integers(1, 6),
            st.integers(1, 3),
            st.integers(0, 2),
        ),
        min_size=0,
        max_size=6,
    ),
    erosion=st.integers(0, 3),
    seed=st.integers(0, 1000),
)
def test_samplable_is_labelled_interior_and_never_no_data(
    boxes: list[tuple[int, int, int, int, int, int]], erosion: int, seed: int
) -> None:
    polys = [_poly(x, y, x + w, y + h, c, p) for x, y, w, h, c, p in boxes]
    ref = rasterize_reference(polys, (10, 10), GRID, "priority")
    no_data = np.random.default_rng(seed).random((10, 10)) < 0.1
    samplable = samplable_mask(ref.labels, ref.polygon_index, erosion, no_data=no_data)
    assert not (samplable & (ref.labels == 0)).any()
    assert not (samplable & no_data).any()
    assert ((ref.labels > 0) == (ref.polygon_index > 0)).all()
    if erosion:  # a samplable pixel's 4-neighbours inside the tile belong to its polygon
        idx = ref.polygon_index
        for dr, dc in ((0, 1), (1, 0)):
            a, b = idx[: 10 - dr, : 10 - dc], idx[dr:, dc:]
            sa, sb = samplable[: 10 - dr, : 10 - dc], samplable[dr:, dc:]
            assert not ((sa | sb) & (a != b)).any()


# -- codes and crosswalks ---------------------------------------------------------------------------


def test_code_keys_normalise_numbers_and_nulls() -> None:
    assert code_key(3) == code_key(3.0) == code_key("3") == code_key(np.int64(3)) == "3"
    assert code_key(None) == code_key(float("nan")) == code_key("  ") == "<null>"
    assert code_key("WHEAT ") == "WHEAT"


def test_crosswalk_maps_names_and_ids_and_rejects_unknown_classes() -> None:
    cw = build_crosswalk({"A": "forest", 7: 3, "x": "Cropland", "skip": 0}, LEGEND, where="test")
    assert cw == {"A": 2, "7": 3, "x": 1, "skip": 0}
    with pytest.raises(ConfigError, match=r"'orchard' is not in the legend.*cropland, forest, water"):
        build_crosswalk({"1": "orchard"}, LEGEND, where="test")
    with pytest.raises(ConfigError, match="class id 9"):
        build_crosswalk({"1": 9}, LEGEND, where="test")


def test_unknown_codes_are_counted_not_dropped_silently() -> None:
    stats = SourceStats()
    labels = labels_for_codes(["A", "A", "B", None, "skip", 7.0], {"A": 2, "7": 3, "skip": 0}, {1, 2, 3}, stats)
    np.testing.assert_array_equal(labels, [2, 2, 0, 0, 0, 3])
    assert stats.unknown_codes == {"B": 1, "<null>": 1}
    assert stats.unlabelled_codes == {"skip": 1}
    # Without a crosswalk the codes are legend ids; 0 means "no label", anything else unknown.
    stats = SourceStats()
    np.testing.assert_array_equal(labels_for_codes([1, 0, 5, "2"], None, {1, 2, 3}, stats), [1, 0, 0, 2])
    assert stats.unknown_codes == {"5": 1} and stats.unlabelled_codes == {"0": 1}


def test_crosswalk_csv(tmp_path: Path) -> None:
    path = tmp_path / "cw.csv"
    path.write_text("code,class\n101,forest\n102,cropland\n")
    assert read_crosswalk_csv(path) == {"101": "forest", "102": "cropland"}
    (tmp_path / "bad.csv").write_text("kod,razred\n1,2\n")
    with pytest.raises(ConfigError, match="needs columns 'code' and 'class'"):
        read_crosswalk_csv(tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match=r"nope\.csv does not exist"):
        read_crosswalk_csv(tmp_path / "nope.csv")


# -- reading files ----------------------------------------------------------------------------------

TILE_CRS = "EPSG:32633"
TILE_BOUNDS = (500000.0, 5000000.0, 500100.0, 5000100.0)  # 10 x 10 px of 10 m
TILE_GRID = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000100.0)


def _reference_frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": ["A", "B", "Z"], "other": [1, 2, 3]},
        geometry=[
            box(500000, 5000000, 500050, 5000100),
            box(500050, 5000000, 500100, 5000060),
            box(700000, 5000000, 700100, 5000100),
        ],  # the last one is far from the tile
        crs=TILE_CRS,
    )


def _burn(path: Path, crosswalk: dict[str, int] | None = None) -> tuple[np.ndarray, SourceStats]:
    frame = read_reference_file(path, None, "code", TILE_BOUNDS, TILE_CRS)
    polys, stats = file_polygons(
        frame,
        "code",
        crosswalk or {"A": 1, "B": 2},
        {1, 2, 3},
        source_name="t",
        bounds=TILE_BOUNDS,
        tile_crs=TILE_CRS,
        priority=0,
        min_area_m2=0,
    )
    return rasterize_reference(polys, (10, 10), TILE_GRID).labels, stats


def test_file_in_another_crs_gives_the_same_raster(tmp_path: Path) -> None:
    _reference_frame().to_file(tmp_path / "utm.gpkg")
    _reference_frame().to_crs(4326).to_file(tmp_path / "wgs.geojson")
    utm, stats = _burn(tmp_path / "utm.gpkg")
    wgs, _ = _burn(tmp_path / "wgs.geojson")
    assert stats.polygons_read == 2  # the far polygon is not read (window filter)
    assert (utm[:, :5] == 1).all() and (utm[4:, 5:] == 2).all() and (utm[:4, 5:] == 0).all()
    assert (utm == wgs).mean() >= 0.98


def test_unknown_code_in_file_is_counted(tmp_path: Path) -> None:
    _reference_frame().to_file(tmp_path / "ref.gpkg")
    labels, stats = _burn(tmp_path / "ref.gpkg", {"A": 1})
    assert stats.unknown_codes == {"B": 1} and stats.polygons_used == 1
    assert (labels[:, 5:] == 0).all()


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"reference file .*missing\.gpkg does not exist"):
        read_reference_file(tmp_path / "missing.gpkg", None, "code", TILE_BOUNDS, TILE_CRS)


def test_file_without_crs_is_an_error(tmp_path: Path) -> None:
    frame = _reference_frame()
    frame.to_file(tmp_path / "ref.shp")
    (tmp_path / "ref.prj").unlink()
    with pytest.raises(ConfigError, match=r"ref\.shp has no CRS"):
        read_reference_file(tmp_path / "ref.shp", None, "code", TILE_BOUNDS, TILE_CRS)


def test_missing_class_column_names_it_and_lists_columns(tmp_path: Path) -> None:
    _reference_frame().to_file(tmp_path / "ref.gpkg")
    with pytest.raises(ConfigError, match=r"no class column 'crop'; columns: \['code', 'other'\]"):
        read_reference_file(tmp_path / "ref.gpkg", None, "crop", TILE_BOUNDS, TILE_CRS)


# -- synthetic truth and options --------------------------------------------------------------------


def test_synthetic_tiles_are_seeded_and_stable() -> None:
    ids = [f"32638_{c}_{r}" for c in range(5) for r in range(4)]
    chosen = synthetic_tiles(ids, 0.6, seed=3)
    assert len(chosen) == 12 and chosen <= set(ids)
    assert synthetic_tiles(list(reversed(ids)), 0.6, seed=3) == chosen  # order of the input does not matter
    assert synthetic_tiles(ids, 0.6, seed=4) != chosen
    assert synthetic_tiles(ids, 0.0, seed=3) == set() and synthetic_tiles(ids, 1.0, seed=3) == set(ids)
    assert len(synthetic_tiles(ids[:1], 0.1, seed=0)) == 1


def test_options_discriminated_union() -> None:
    opts = add_reference.Options.model_validate(
        {
            "sources": [
                {"type": "file", "path": "lpis_{season}.gpkg", "class_column": "crop", "crosswalk": {1: "x"}},
                {"type": "synthetic_truth", "tile_fraction": 0.5},
            ]
        }
    )
    assert isinstance(opts.sources[0], add_reference.FileSource)
    assert isinstance(opts.sources[1], add_reference.SyntheticTruthSource)
    assert isinstance(add_reference.Options().sources[0], add_reference.SyntheticTruthSource)
    with pytest.raises(ValidationError):
        add_reference.Options.model_validate({"sources": [{"type": "wfs", "path": "x"}]})
    with pytest.raises(ValidationError, match=r"only one of .*has `crosswalk` and `crosswalk_file`"):
        add_reference.FileSource.model_validate(
            {"path": "a", "class_column": "c", "crosswalk": {}, "crosswalk_file": "cw.csv"}
        )
    with pytest.raises(ValidationError, match="has `crosswalk_file` and `crosswalk_chain`"):
        add_reference.FileSource.model_validate(
            {"path": "a", "class_column": "c", "crosswalk_file": "cw.csv", "crosswalk_chain": ["x.csv"]}
        )
    # A chain step is a path (default columns code, class) or a mapping naming its columns.
    chained = add_reference.FileSource.model_validate(
        {
            "path": "a",
            "class_column": "c",
            "crosswalk_chain": [
                {"path": "national.csv", "code_column": "original_code", "target_column": "HCAT3_code"},
                "hcat.csv",
            ],
        }
    )
    assert chained.crosswalk_chain is not None
    assert [(s.path, s.code_column, s.target_column) for s in chained.crosswalk_chain] == [
        ("national.csv", "original_code", "HCAT3_code"),
        ("hcat.csv", "code", "class"),
    ]
    with pytest.raises(ValidationError, match="crosswalk_chain"):
        add_reference.FileSource.model_validate({"path": "a", "class_column": "c", "crosswalk_chain": []})
    with pytest.raises(ValidationError, match="code_colum"):
        add_reference.FileSource.model_validate(
            {"path": "a", "class_column": "c", "crosswalk_chain": [{"path": "x.csv", "code_colum": "k"}]}
        )


# -- the stage on the fixture project ---------------------------------------------------------------


def _with_stage_options(config_path: Path, options: dict[str, object]) -> Path:
    data = yaml.safe_load(config_path.read_text())
    data["stages"] = {"add_reference": options}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return config_path


def test_stage_with_a_file_source_in_wgs84(config_path: Path) -> None:
    from lcms_tasks import eopatch, runner

    cfg0 = load_config(config_path)
    tile = project_tiles(cfg0)[0]
    x0, y0, x1, y1 = tile.bounds
    xm = (x0 + x1) / 2
    frame = gpd.GeoDataFrame(
        {"code": ["F", "W", "Q"]},
        geometry=[box(x0, y0, xm, y1), box(xm, y0, x1, (y0 + y1) / 2), box(xm, (y0 + y1) / 2, x1, y1)],
        crs=tile.crs,
    ).to_crs(4326)
    frame.to_file(config_path.parent / "ref_2023.geojson")
    (config_path.parent / "cw.csv").write_text("code,class\nF,forest\nW,water\n")
    _with_stage_options(
        config_path,
        {
            "sources": [
                {"type": "file", "path": "ref_{season}.geojson", "class_column": "code", "crosswalk_file": "cw.csv"}
            ],
            "erosion_per_class": {"water": 2},
        },
    )
    cfg = load_config(config_path)
    ctx = RunContext.create(cfg, season="2023", run_id="t")
    for stage in ("download", "features", "add_reference"):
        runner.run_tiles(stage, [tile], ctx)
    patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("add_reference", tile.id))
    labels = patch.mask_timeless["REFERENCE"][..., 0]
    samplable = patch.mask_timeless["REFERENCE_SAMPLABLE"][..., 0]
    pid = patch.mask_timeless["POLYGON_ID"][..., 0]
    assert labels.dtype == np.uint8 and samplable.dtype == bool and pid.dtype == np.int32
    h, w = labels.shape
    forest = labels[:, : w // 2] == 2
    assert forest.mean() > 0.95
    assert (labels[h // 2 + 1 :, w // 2 + 1 :] == 4).mean() > 0.95  # water, bottom right
    assert meta["unknown_codes"] == {"Q": 1}  # the top-right polygon's code is not in the crosswalk
    assert (labels[: h // 2 - 1, w // 2 + 1 :] == 0).all()
    assert meta["class_pixels"] == {str(c): int((labels == c).sum()) for c in (2, 4)}
    assert len(meta["polygon_keys"]) == int(pid.max()) == 2
    no_data = eopatch.load(ctx.storage, ctx.tile_uri("features", tile.id))[0].mask_timeless["NO_DATA"][..., 0]
    assert not (samplable & (no_data | (labels == 0))).any()
    # Water is eroded by 2 px: no samplable water pixel within 2 px of a non-water pixel.
    water_ok = samplable & (labels == 4)
    rows, cols = np.nonzero(water_ok)
    assert len(rows) and (cols >= w // 2 + 2).all() and (rows >= h // 2 + 2).all()


def test_stage_errors_name_the_problem(config_path: Path) -> None:
    from lcms_tasks import runner

    _with_stage_options(config_path, {"sources": [{"type": "file", "path": "nowhere.gpkg", "class_column": "c"}]})
    cfg = load_config(config_path)
    tile = project_tiles(cfg)[0]
    ctx = RunContext.create(cfg, season="2023", run_id="t")
    runner.run_tiles("download", [tile], ctx)
    runner.run_tiles("features", [tile], ctx)
    with pytest.raises(StageError, match=r"nowhere\.gpkg does not exist"):
        runner.run_tiles("add_reference", [tile], ctx)
    assert not ctx.storage.is_complete(ctx.tile_uri("add_reference", tile.id))
    _with_stage_options(config_path, {"erosion_per_class": {"orchard": 2}})
    ctx2 = RunContext.create(load_config(config_path), season="2023", run_id="t2")
    with pytest.raises(StageError, match="'orchard', not in the legend"):
        runner.run_tiles("add_reference", [tile], ctx2)


# -- crosswalk chains and zipped files in the stage's file source ----------------------------------


def _chain_project(config_path: Path, source: dict[str, object]) -> tuple[ProjectConfig, Tile]:
    """A config whose add_reference source is ``source``, and its first tile (nothing run)."""
    _with_stage_options(config_path, {"sources": [source]})
    cfg = load_config(config_path)
    return cfg, project_tiles(cfg)[0]


def _polygons(cfg: ProjectConfig, tile: Tile) -> tuple[list[LabelledPolygon], SourceStats]:
    options = cfg.stages.add_reference
    source = options.sources[0]
    assert isinstance(source, add_reference.FileSource)
    return add_reference._file_source_polygons(source, cfg, "2023", tile, options)


def _three_fields(config_path: Path, tile: Tile, codes: list[str], name: str = "national.gpkg") -> Path:
    x0, y0, x1, y1 = tile.bounds
    third = (x1 - x0) / 3
    frame = gpd.GeoDataFrame(
        {"crop": codes},
        geometry=[box(x0 + k * third, y0, x0 + (k + 1) * third, y1) for k in range(3)],
        crs=tile.crs,
    ).to_crs(3035)  # the file in another CRS than the tile
    path = config_path.parent / name
    frame.to_file(path, driver="GPKG", layer="parcels")
    return path


def test_stage_file_source_with_a_crosswalk_chain_counts_unknown_codes_per_step(config_path: Path) -> None:
    (config_path.parent / "national.csv").write_text(
        "original_code;original_name;HCAT3_code\n"  # semicolons, other column names, a row without code
        "110;WINTERGERSTE;3301010401\n"
        ";second crop of the row above;3301070000\n"
        "900;SONDERKULTUR;9999999999\n",  # an HCAT code the next step does not know
        encoding="utf-8",
    )
    (config_path.parent / "hcat.csv").write_text("code,class\n3301010401,forest\n3301070000,water\n")
    source = {
        "type": "file",
        "path": "national.gpkg",
        "layer": "parcels",
        "class_column": "crop",
        "crosswalk_chain": [
            {"path": "national.csv", "code_column": "ORIGINAL_CODE", "target_column": "HCAT3_code"},
            "hcat.csv",
        ],
    }
    cfg, tile = _chain_project(config_path, source)
    _three_fields(config_path, tile, ["110", "900", "555"])
    polygons, stats = _polygons(cfg, tile)
    assert [p.label for p in polygons] == [2]  # 110 -> winter barley -> forest (id 2 of the demo legend)
    assert stats.unknown_codes == {"900": 1, "555": 1}
    by_step = stats.to_dict()["unknown_codes_by_step"]
    assert [step["unknown_codes"] for step in by_step] == [{"555": 1}, {"9999999999": 1}]
    assert "national.csv [ORIGINAL_CODE -> HCAT3_code]" in by_step[0]["crosswalk"]
    # Only the last step names classes: a class the legend lacks is an error naming the file and line.
    (config_path.parent / "hcat.csv").write_text("code,class\n3301010401,forest\n3301070000,orchard\n")
    with pytest.raises(ConfigError, match=r"hcat\.csv.*'orchard' \(line 3\)"):
        _polygons(cfg, tile)


def test_stage_chain_errors_name_file_line_and_column(config_path: Path) -> None:
    (config_path.parent / "hcat.csv").write_text("code,class\n3301010401,forest\n")
    (config_path.parent / "national.csv").write_text("original_code,HCAT2_code\n110,3301010401\n")
    source = {
        "type": "file",
        "path": "national.gpkg",
        "class_column": "crop",
        "crosswalk_chain": [
            {"path": "national.csv", "code_column": "original_code", "target_column": "HCAT3_code"},
            "hcat.csv",
        ],
    }
    cfg, tile = _chain_project(config_path, source)
    _three_fields(config_path, tile, ["110", "110", "110"])
    with pytest.raises(ConfigError, match=r"national\.csv has no column\(s\) HCAT3_code; its header \(line 1\)"):
        _polygons(cfg, tile)
    (config_path.parent / "national.csv").write_text("original_code,HCAT3_code\n110,3301010401\n110,3301010402\n")
    with pytest.raises(ConfigError, match=r"national\.csv line 3: code '110' is mapped to '3301010402', but line 2"):
        _polygons(cfg, tile)


def test_stage_reads_a_zipped_shapefile(config_path: Path) -> None:
    import zipfile

    (config_path.parent / "cw.csv").write_text("code,class\nF,forest\nW,water\n")
    source = {"type": "file", "path": "fields.zip", "class_column": "crop", "crosswalk_file": "cw.csv"}
    cfg, tile = _chain_project(config_path, source)
    gpkg = _three_fields(config_path, tile, ["F", "W", "F"], name="fields.gpkg")
    shp_dir = config_path.parent / "shp"
    shp_dir.mkdir()
    gpd.read_file(gpkg).to_file(shp_dir / "fields.shp")
    with zipfile.ZipFile(config_path.parent / "fields.zip", "w") as zf:
        for p in shp_dir.iterdir():
            zf.write(p, p.name)
    polygons, stats = _polygons(cfg, tile)
    assert sorted(p.label for p in polygons) == [2, 2, 4] and stats.unknown_codes == {}
