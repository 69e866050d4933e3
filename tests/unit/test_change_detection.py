"""Change detection: pure functions, hypothesis invariants, GPKG round trips and the stage on two seasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from lcms_tasks import changes as ch
from lcms_tasks.stages import change_detection as stage

LEGEND = {1: "cropland", 2: "forest", 3: "grassland", 4: "water", 5: "built-up", 6: "bare land"}
ONES = np.ones((1, 1), dtype=np.float32)


def _conf(shape: tuple[int, ...], value: float = 1.0) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


# -- transitions ----------------------------------------------------------------------------------------
def test_resolve_transitions_names_and_wildcards() -> None:
    pairs = ch.resolve_transitions([{"from": "cropland", "to": "built-up"}, {"from": "*", "to": "water"}], LEGEND)
    assert (1, 5) in pairs
    assert {(c, 4) for c in (1, 2, 3, 5, 6)} <= pairs
    assert (4, 4) not in pairs
    assert len(pairs) == 6
    every = ch.resolve_transitions([{"from": "*", "to": "*"}], LEGEND)
    assert len(every) == 6 * 5 and all(a != b for a, b in every)


def test_resolve_transitions_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"transitions\[1\]\.to: unknown class name 'urban'"):
        ch.resolve_transitions([{"from": "forest", "to": "water"}, {"from": "forest", "to": "urban"}], LEGEND)
    lenient = ch.resolve_transitions(
        [{"from": "forest", "to": "water"}, {"from": "forest", "to": "urban"}], LEGEND, strict=False
    )
    assert lenient == {(2, 4)}


def test_default_transitions_fit_the_demo_legend() -> None:
    pairs = ch.resolve_transitions(stage.DEFAULT_TRANSITIONS, LEGEND)
    for expected in [(1, 5), (2, 6), (1, 4), (3, 4), (1, 3), (3, 5), (2, 5), (2, 1), (3, 1), (6, 4), (6, 5)]:
        assert expected in pairs, expected
    assert (1, 2) not in pairs  # cropland -> forest is not a change of interest
    assert (3, 2) not in pairs


def test_change_confidence_rules() -> None:
    a = np.array([0.5, 0.8, np.nan], dtype=np.float32)
    b = np.array([0.6, 0.4, 0.9], dtype=np.float32)
    assert ch.change_confidence(a, b, "product").tolist() == pytest.approx([0.3, 0.32, 0.0])
    assert ch.change_confidence(a, b, "min").tolist() == pytest.approx([0.5, 0.4, 0.0])
    assert ch.change_confidence(a, b, "mean").tolist() == pytest.approx([0.55, 0.6, 0.45])
    with pytest.raises(ValueError, match="confidence rule"):
        ch.change_confidence(a, b, "max")  # type: ignore[arg-type]


# -- detection ------------------------------------------------------------------------------------------
def test_detect_changes_finds_relevant_regions_only() -> None:
    before = np.ones((12, 12), dtype=np.uint8)
    after = before.copy()
    after[2:6, 2:6] = 5  # cropland -> built-up, 16 px
    after[8:10, 8:12] = 2  # cropland -> forest: not relevant
    after[0, 11] = 5  # 1 px: too small
    before[10:12, 0:3] = 0  # no data before
    after[10:12, 0:3] = 5
    labels, regions = ch.detect_changes(before, after, _conf(before.shape), _conf(before.shape), {(1, 5)}, 4, 0.5)
    assert regions == [{"from": 1, "to": 5, "n_pixels": 16, "confidence": 1.0}]
    assert labels.dtype == np.int32
    assert (labels[2:6, 2:6] == 1).all() and int((labels > 0).sum()) == 16


def test_detect_changes_splits_transitions_and_diagonals() -> None:
    before = np.ones((6, 6), dtype=np.uint8)
    after = before.copy()
    after[0:2, 0:2] = 5
    after[0:2, 2:4] = 4  # touches the built-up block but is another transition
    after[2:4, 4:6] = 5  # meets the water block only at a corner -> its own region
    labels, regions = ch.detect_changes(before, after, _conf((6, 6)), _conf((6, 6)), {(1, 5), (1, 4)}, 1, 0.0)
    assert sorted((r["from"], r["to"], r["n_pixels"]) for r in regions) == [(1, 4, 4), (1, 5, 4), (1, 5, 4)]
    assert labels.max() == 3


def test_detect_changes_confidence_filter_uses_region_mean() -> None:
    before = np.ones((4, 4), dtype=np.uint8)
    after = before.copy()
    after[:2, :2] = 4
    conf_b = _conf((4, 4), 0.9)
    conf_a = _conf((4, 4), 0.9)
    conf_a[0, 0] = 0.1  # one doubtful pixel: mean product (3 * 0.81 + 0.09) / 4 = 0.63
    _, kept = ch.detect_changes(before, after, conf_b, conf_a, {(1, 4)}, 1, 0.6)
    assert len(kept) == 1 and kept[0]["confidence"] == pytest.approx(0.63)
    _, dropped = ch.detect_changes(before, after, conf_b, conf_a, {(1, 4)}, 1, 0.65)
    assert dropped == []
    with pytest.raises(ValueError, match="shape"):
        ch.detect_changes(before, after[:3], conf_b, conf_a, {(1, 4)}, 1, 0.6)


# -- invariants (hypothesis) ---------------------------------------------------------------------------
maps = st.integers(1, 20).flatmap(
    lambda h: st.integers(1, 20).flatmap(
        lambda w: st.tuples(
            arrays(np.uint8, (h, w), elements=st.sampled_from([0, 1, 2, 4, 5])),
            arrays(np.uint8, (h, w), elements=st.sampled_from([0, 1, 2, 4, 5])),
        )
    )
)
ALL_PAIRS = {(a, b) for a in (1, 2, 4, 5) for b in (1, 2, 4, 5) if a != b}


@settings(max_examples=80, deadline=None)
@given(pair=maps, min_pixels=st.integers(1, 6), subset=st.sets(st.sampled_from(sorted(ALL_PAIRS))))
def test_change_invariants(pair: tuple[np.ndarray, np.ndarray], min_pixels: int, subset: set[tuple[int, int]]) -> None:
    from scipy import ndimage

    before, after = pair
    conf = _conf(before.shape)
    # A map compared with itself has no change.
    same, none = ch.detect_changes(before, before, conf, conf, ALL_PAIRS, 1, 0.0)
    assert none == [] and not same.any()
    labels, regions = ch.detect_changes(before, after, conf, conf, subset, min_pixels, 0.0)
    changed = labels > 0
    assert not (changed & (before == after)).any()
    assert not (changed & ((before == 0) | (after == 0))).any()
    assert labels.max() == len(regions)
    for k, region in enumerate(regions, start=1):
        inside = labels == k
        assert int(inside.sum()) == region["n_pixels"] >= min_pixels
        assert (region["from"], region["to"]) in subset
        assert (before[inside] == region["from"]).all() and (after[inside] == region["to"]).all()
        assert ndimage.label(inside)[1] == 1  # one connected region
    # Nothing relevant and large enough is missed.
    relevant = np.zeros(before.shape, dtype=bool)
    for f, t in subset:
        relevant |= (before == f) & (after == t)
    lab, n = ndimage.label(relevant & ~changed)
    for k in range(1, n + 1):
        piece = lab == k
        codes = set(zip(before[piece].tolist(), after[piece].tolist(), strict=True))
        if len(codes) == 1:
            assert int(piece.sum()) < min_pixels


# -- vectorisation and files ----------------------------------------------------------------------------
def _vectorise(labels: np.ndarray, regions: list[dict[str, Any]], min_area: float = 0.0) -> Any:
    return ch.vectorise_changes(
        labels,
        regions,
        Affine(10.0, 0, 5000.0, 0, -10.0, 9000.0),
        "EPSG:32638",
        class_names=LEGEND,
        tile_id="32638_1_2",
        season_before="2023",
        season_after="2024",
        min_area_m2=min_area,
    )


def test_vectorise_changes_geometry_area_and_columns() -> None:
    before = np.ones((10, 10), dtype=np.uint8)
    after = before.copy()
    after[1:4, 2:7] = 4  # 15 px = 1500 m²
    after[8:10, 8:10] = 5  # 4 px = 400 m²
    labels, regions = ch.detect_changes(before, after, _conf(before.shape), _conf(before.shape), ALL_PAIRS, 1, 0.0)
    frame = _vectorise(labels, regions, min_area=500.0)
    assert list(frame.columns) == [*ch.CHANGE_COLUMNS, "geometry"]
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["from_name"], row["to_name"], row["from_class"], row["to_class"]) == ("cropland", "water", 1, 4)
    assert row["area_m2"] == pytest.approx(1500.0)
    assert row.geometry.bounds == pytest.approx((5020.0, 8960.0, 5070.0, 8990.0))
    assert row["change_id"] == 1 and row["tile"] == "32638_1_2" and row["season_after"] == "2024"
    assert frame.crs.to_epsg() == 32638
    assert ch.area_by_transition(frame) == {"cropland -> water": pytest.approx(1500.0)}


def test_gpkg_round_trip_empty_and_full(tmp_path: Path) -> None:
    empty = ch.empty_changes("EPSG:32638")
    ch.write_changes(empty, tmp_path / "empty.gpkg")
    back = ch.read_changes(tmp_path / "empty.gpkg")
    assert back.empty and list(back.columns) == [*ch.CHANGE_COLUMNS, "geometry"]
    assert back.crs.to_epsg() == 32638
    assert str(back["area_m2"].dtype) == "float64" and str(back["change_id"].dtype) == "int64"
    assert ch.area_by_transition(back) == {}

    labels = np.zeros((5, 5), dtype=np.int32)
    labels[1:3, 1:3] = 1
    frame = _vectorise(labels, [{"from": 2, "to": 6, "n_pixels": 4, "confidence": 0.75}])
    ch.write_changes(frame, tmp_path / "full.gpkg")
    full = ch.read_changes(tmp_path / "full.gpkg")
    assert len(full) == 1 and full.iloc[0]["to_name"] == "bare land"
    assert full.iloc[0]["confidence"] == pytest.approx(0.75)
    assert full.geometry.iloc[0].equals(frame.geometry.iloc[0])
    frame[["change_id", "geometry"]].to_file(tmp_path / "other.gpkg", driver="GPKG", layer=ch.LAYER)
    with pytest.raises(ValueError, match="not a change table"):
        ch.read_changes(tmp_path / "other.gpkg")


def test_min_pixels_for_area() -> None:
    assert ch.min_pixels_for_area(5000, 10) == 50
    assert ch.min_pixels_for_area(5001, 10) == 51
    assert ch.min_pixels_for_area(0, 10) == 1


def test_options_validate_transitions() -> None:
    assert stage.Options().transitions == stage.DEFAULT_TRANSITIONS
    with pytest.raises(ValidationError, match="exactly the keys"):
        stage.Options(transitions=[{"from": "forest"}])
    with pytest.raises(ValidationError):
        stage.Options(confidence_rule="max")


# -- the stage ------------------------------------------------------------------------------------------
def _project(config_path: Path, options: dict[str, Any] | None = None, *, third_season: bool = False) -> Any:
    from lcms_tasks.config import load_config

    data = yaml.safe_load(config_path.read_text())
    if options is not None:
        data["stages"] = {"change_detection": options}
    if third_season:
        data["seasons"]["2025"] = {"start": "2025-04-01", "end": "2025-09-30"}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(config_path)


def _tile(cfg: Any) -> Any:
    from lcms_tasks.grid import project_tiles

    return project_tiles(cfg)[0]


def _store_map(cfg: Any, tile: Any, season: str, cls: np.ndarray, conf: float = 0.9) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.context import RunContext

    ctx = RunContext.create(cfg, season=season, run_id=f"pp-{season}")
    patch = eopatch.new_patch(tile, [])
    patch.mask_timeless["CLASS"] = cls[..., None]
    patch.data_timeless["CONFIDENCE"] = np.full((*cls.shape, 1), conf, dtype=np.float32)
    eopatch.save(
        ctx.storage,
        ctx.tile_uri("postprocessing", tile.id, season=season),
        patch,
        meta=ctx.marker_meta("postprocessing", tile.id, {"steps_applied": []}),
    )


def _read_output(ctx: Any, tile: Any) -> tuple[Any, dict[str, Any]]:
    uri = ctx.tile_uri("change_detection", tile.id)
    meta = ctx.storage.read_marker(uri)
    with ctx.storage.reading_dir(uri) as folder:
        frame = ch.read_changes(Path(folder) / stage.GPKG_NAME)
    return frame, meta


def test_stage_finds_inserted_change(config_path: Path) -> None:
    from lcms_tasks.context import RunContext
    from lcms_tasks.runner import run_tiles

    cfg = _project(config_path)
    tile = _tile(cfg)
    n = tile.size_px
    before = np.ones((n, n), dtype=np.uint8)
    before[:, n // 2 :] = 2
    before[:2, :] = 0
    after = before.copy()
    after[10:20, 5:15] = 5  # cropland -> built-up, 100 px
    after[40:50, 40:50] = 3  # forest -> grassland: not a relevant transition by default
    after[30:32, 5:7] = 4  # cropland -> water, 4 px: under 5000 m²
    _store_map(cfg, tile, "2023", before)
    _store_map(cfg, tile, "2024", after)
    ctx = RunContext.create(cfg, season="2024", run_id="cd1")
    result = run_tiles("change_detection", [tile], ctx)
    assert result.written[tile.id] == [ctx.tile_uri("change_detection", tile.id)]
    frame, meta = _read_output(ctx, tile)
    pixel_area = tile.resolution**2
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["from_name"], row["to_name"], row["season_before"], row["season_after"]) == (
        "cropland",
        "built-up",
        "2023",
        "2024",
    )
    assert row["area_m2"] == pytest.approx(100 * pixel_area)
    assert row["confidence"] == pytest.approx(0.81)
    t = tile.transform()
    x0, y0 = t * (5, 10)
    x1, y1 = t * (15, 20)
    assert row.geometry.bounds == pytest.approx((x0, y1, x1, y0))
    assert frame.crs.to_epsg() == tile.epsg
    assert meta["season_before"] == "2023" and meta["n_changes"] == 1
    assert meta["change_area_m2_by_transition"] == {"cropland -> built-up": pytest.approx(100 * pixel_area)}


def test_stage_first_season_writes_empty_table(config_path: Path) -> None:
    from lcms_tasks.context import RunContext
    from lcms_tasks.runner import run_tiles

    cfg = _project(config_path)
    tile = _tile(cfg)
    ctx = RunContext.create(cfg, season="2023", run_id="cd2")
    run_tiles("change_detection", [tile], ctx)
    frame, meta = _read_output(ctx, tile)
    assert frame.empty and "area_m2" in frame.columns and frame.crs.to_epsg() == tile.epsg
    assert meta["note"] == "no before season" and meta["n_changes"] == 0 and meta["season_before"] is None


def test_implicit_before_season_without_maps_gives_empty_tables(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The season before has not been processed: the run still completes (empty tables) and says so once."""
    from lcms_tasks.context import RunContext
    from lcms_tasks.preflight import check_run
    from lcms_tasks.runner import run_tiles

    cfg = _project(config_path)
    tile = _tile(cfg)
    _store_map(cfg, tile, "2024", np.ones(tile.shape, dtype=np.uint8))
    ctx = RunContext.create(cfg, season="2024", run_id="cd3", subset=[tile.id])
    with caplog.at_level("WARNING"):
        check_run("change_detection", ctx)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "season before (2023)" in warnings[0] and "1 of 1 tile" in warnings[0]
    run_tiles("change_detection", [tile], ctx)
    frame, meta = _read_output(ctx, tile)
    assert frame.empty and meta["n_changes"] == 0
    assert meta["note"] == "no post-processed map of the before season 2023"


def test_explicit_before_season_without_maps_fails_before_any_tile(config_path: Path) -> None:
    """Asked for by the run parameter, a missing before season is one error naming stage, season, tile, command."""
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import UpstreamMissingError
    from lcms_tasks.preflight import check_run

    cfg = _project(config_path)
    tile = _tile(cfg)
    _store_map(cfg, tile, "2024", np.ones(tile.shape, dtype=np.uint8))
    ctx = RunContext.create(
        cfg, season="2024", run_id="cd3", subset=[tile.id], params={"before_season": "2023"}, config_path="p.yaml"
    )
    with pytest.raises(UpstreamMissingError) as info:
        check_run("change_detection", ctx)
    message = str(info.value)
    assert "\n" not in message
    assert "post-processed map (before season, from run parameter before_season) of season 2023" in message
    assert tile.id in message
    assert f"lcms run postprocessing --config p.yaml --season 2023 --tile {tile.id}" not in message  # all missing
    assert "lcms run postprocessing --config p.yaml --season 2023`" in message
    assert info.value.permanent
    assert not ctx.storage.is_complete(ctx.tile_uri("change_detection", tile.id))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"before_season": "1999"}, "before season '1999' is not a season of the config"),
        ({"before_season": "2024"}, "is the run's own season"),
        ({"before": "2023"}, "has no run parameter 'before'"),
    ],
)
def test_bad_run_parameters_are_refused(config_path: Path, params: dict[str, str], match: str) -> None:
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import ConfigError
    from lcms_tasks.preflight import check_run

    cfg = _project(config_path)
    ctx = RunContext.create(cfg, season="2024", run_id="cd5", params=params)
    with pytest.raises(ConfigError, match=match):
        check_run("change_detection", ctx)


def test_run_parameter_before_season_is_applied(config_path: Path) -> None:
    """before_season given as a run parameter (as the ECS runner passes it) decides the comparison."""
    from lcms_tasks.context import RunContext
    from lcms_tasks.runner import run_tiles

    cfg = _project(config_path, third_season=True)
    tile = _tile(cfg)
    n = tile.size_px
    base = np.ones((n, n), dtype=np.uint8)
    changed = base.copy()
    changed[10:20, 5:15] = 5
    _store_map(cfg, tile, "2023", base)  # cropland -> built-up after 2023; 2024 already equals 2025
    _store_map(cfg, tile, "2024", changed)
    _store_map(cfg, tile, "2025", changed)
    ctx = RunContext.create(cfg, season="2025", run_id="cd6", params={"before_season": "2023"})
    run_tiles("change_detection", [tile], ctx)
    frame, meta = _read_output(ctx, tile)
    assert meta["season_before"] == "2023" and len(frame) == 1
    run_tiles("change_detection", [tile], RunContext.create(cfg, season="2025", run_id="cd7"))
    frame, meta = _read_output(ctx, tile)
    assert meta["season_before"] == "2024" and frame.empty  # without the parameter: the previous season


def test_stage_unknown_class_in_transitions(config_path: Path) -> None:
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import ConfigError

    cfg = _project(config_path, {"transitions": [{"from": "forest", "to": "urban sprawl"}]})
    tile = _tile(cfg)
    ctx = RunContext.create(cfg, season="2024", run_id="cd4")
    with pytest.raises(ConfigError, match="unknown class name 'urban sprawl'"):
        stage.run(tile, ctx)


def test_stage_before_season_param_and_option(config_path: Path) -> None:
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import ConfigError

    cfg = _project(
        config_path,
        {"before_season": "2023", "transitions": [{"from": "*", "to": "*"}], "min_area_m2": 0, "min_confidence": 0},
        third_season=True,
    )
    tile = _tile(cfg)
    base = np.ones(tile.shape, dtype=np.uint8)
    changed = base.copy()
    changed[:4, :4] = 2
    _store_map(cfg, tile, "2023", base)
    _store_map(cfg, tile, "2024", base)
    _store_map(cfg, tile, "2025", changed)
    # The option skips 2024 (identical to 2023): 2023 -> 2025 shows the change.
    ctx = RunContext.create(cfg, season="2025", run_id="cd5")
    stage.run(tile, ctx)
    frame, meta = _read_output(ctx, tile)
    assert meta["season_before"] == "2023" and len(frame) == 1
    # A run parameter overrides the option.
    ctx = RunContext.create(cfg, season="2025", run_id="cd6", params={"before_season": "2024"})
    stage.run(tile, ctx)
    frame, meta = _read_output(ctx, tile)
    assert meta["season_before"] == "2024" and frame.iloc[0]["season_before"] == "2024"
    ctx = RunContext.create(cfg, season="2025", run_id="cd7", params={"before_season": "1999"})
    with pytest.raises(ConfigError, match="before season '1999' is not a season of the config"):
        stage.run(tile, ctx)
