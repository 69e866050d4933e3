"""Tests of the reporting stage: pure statistics (lcms_tasks.report.stats) and a run on fake upstream artefacts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import box

from lcms_tasks.changes import write_changes
from lcms_tasks.report import stats
from lcms_tasks.report.stats import ClassInfo
from tests.conftest import base_config, write_aoi

LEGEND = [ClassInfo(1, "crop", "#f4d03f"), ClassInfo(2, "forest", "#1e8449"), ClassInfo(3, "water", "#2e86c1")]


# -- pure statistics --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint8, (12, 9), elements=st.integers(0, 6)),
    arrays(np.int32, (12, 9), elements=st.integers(0, 3)),
    st.sampled_from([1.0, 100.0, 400.0]),
)
def test_class_areas_add_up_per_zone_and_total(classes: np.ndarray, zones: np.ndarray, px_area: float) -> None:
    counts, _ = stats.zone_class_counts(classes, zones, 4)
    tile_area = classes.size * px_area / 1e6
    total_rows = stats.class_area_rows(counts.sum(axis=0), LEGEND, px_area)
    assert sum(r["area_km2"] for r in total_rows) == pytest.approx(tile_area)
    assert sum(r["share"] for r in total_rows) == pytest.approx(1.0)
    zone_sum = 0.0
    for z in range(4):
        rows = stats.class_area_rows(counts[z], LEGEND, px_area)
        assert sum(r["pixels"] for r in rows) == int((zones == z).sum())
        zone_sum += sum(r["area_km2"] for r in rows)
    assert zone_sum == pytest.approx(tile_area)
    # Ids outside the legend (4..6) are listed, never dropped.
    listed = {r["id"] for r in total_rows}
    assert set(np.unique(classes).tolist()) <= listed


def test_class_area_rows_names_and_confidence() -> None:
    classes = np.array([[0, 1, 1], [2, 9, 1]], np.uint8)
    conf = np.array([[0.0, 0.5, 1.0], [0.8, 0.2, np.nan]], np.float32)
    counts, sums = stats.zone_class_counts(classes, np.zeros_like(classes, np.int32), 1, conf)
    rows = {r["id"]: r for r in stats.class_area_rows(counts[0], LEGEND, 100.0, sums[0])}
    assert rows[0]["name"] == "no data" and rows[0]["pixels"] == 1
    assert rows[1]["pixels"] == 3 and rows[1]["area_km2"] == pytest.approx(300 / 1e6)
    assert rows[1]["mean_confidence"] == pytest.approx(0.5)  # NaN counts as 0
    assert rows[3]["pixels"] == 0 and rows[3]["mean_confidence"] is None
    assert rows[9]["name"] == "unknown class 9"


def test_zone_class_counts_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        stats.zone_class_counts(np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.int32), 1)
    with pytest.raises(ValueError, match="zone ids"):
        stats.zone_class_counts(np.zeros((2, 2), np.uint8), np.full((2, 2), 5, np.int32), 2)


def test_transitions_aggregated() -> None:
    names = {c.id: c.name for c in LEGEND}
    rows = stats.transition_rows([1, 1, 2, 1], [2, 2, 3, 3], [1e6, 2e6, 5e5, 4e6], names)
    assert rows == [
        {"from_id": 1, "from_name": "crop", "to_id": 3, "to_name": "water", "count": 1, "area_km2": 4.0},
        {"from_id": 1, "from_name": "crop", "to_id": 2, "to_name": "forest", "count": 2, "area_km2": 3.0},
        {"from_id": 2, "from_name": "forest", "to_id": 3, "to_name": "water", "count": 1, "area_km2": 0.5},
    ]
    assert stats.transition_rows([], [], [], names) == []
    with pytest.raises(ValueError, match="lengths"):
        stats.transition_rows([1], [2, 3], [1.0], names)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4), st.floats(0, 1e6)), max_size=30), st.integers(1, 4))
def test_merged_transitions_equal_transitions_of_all(items: list[tuple[int, int, float]], n_parts: int) -> None:
    names = {c.id: c.name for c in LEGEND}
    parts = [items[i::n_parts] for i in range(n_parts)]
    tables = [
        stats.transition_rows([f for f, _, _ in p], [t for _, t, _ in p], [a for *_, a in p], names) for p in parts
    ]
    merged = stats.merge_transition_rows(tables, names)
    whole = stats.transition_rows([f for f, _, _ in items], [t for _, t, _ in items], [a for *_, a in items], names)
    assert [
        (r["from_id"], r["to_id"], r["count"]) for r in sorted(merged, key=lambda r: (r["from_id"], r["to_id"]))
    ] == [(r["from_id"], r["to_id"], r["count"]) for r in sorted(whole, key=lambda r: (r["from_id"], r["to_id"]))]
    assert sum(r["area_km2"] for r in merged) == pytest.approx(sum(a for *_, a in items) / 1e6)
    assert names.get(4) is None and all(r["to_name"] == "class 4" for r in merged if r["to_id"] == 4)


def test_confusion_matrix_passthrough_and_derived_figures() -> None:
    matrix = [[50, 3, 2], [4, 40, 1], [0, 2, 30]]
    meta = {
        "metrics": {
            "test": {
                "overall_accuracy": 0.9,
                "confusion_matrix": {"class_ids": [1, 2, 3], "matrix": matrix},
                "per_class": {"2": {"precision": 0.77, "recall": 0.66, "f1_score": 0.7}},
            }
        }
    }
    out = stats.normalise_metrics(meta, LEGEND)
    assert out is not None
    assert out["confusion_matrix"] == {"class_ids": [1, 2, 3], "matrix": matrix}
    assert out["overall_accuracy"] == 0.9  # the trainer's figure wins over the recomputed one
    cm = np.array(matrix, float)
    po, pe = np.trace(cm) / cm.sum(), (cm.sum(0) * cm.sum(1)).sum() / cm.sum() ** 2
    assert out["kappa"] == pytest.approx((po - pe) / (1 - pe))  # derived: the trainer gave none
    assert out["per_class"]["2"]["precision"] == 0.77 and out["per_class"]["2"]["f1"] == 0.7
    assert out["per_class"]["1"]["recall"] == pytest.approx(50 / 55)
    assert out["per_class"]["3"]["name"] == "water"


def test_metrics_plain_matrix_uses_metadata_legend_order() -> None:
    meta = {"legend": [{"id": 3}, {"id": 1}], "metrics": {"confusion_matrix": [[5, 0], [1, 4]], "kappa": 0.8}}
    out = stats.normalise_metrics(meta, LEGEND)
    assert out is not None
    assert out["confusion_matrix"]["class_ids"] == [3, 1]
    assert out["per_class"]["3"]["recall"] == 1.0
    assert out["kappa"] == 0.8
    assert stats.normalise_metrics({"no": "metrics"}, LEGEND) is None
    with pytest.raises(ValueError, match="3 class ids"):
        stats.normalise_metrics({"metrics": {"confusion_matrix": [[1, 0], [0, 1]]}}, LEGEND)


def test_metrics_in_the_training_stage_shape() -> None:
    """training writes metadata['metrics'] = ml.metrics.classification_report(...): flat, per_class a list."""
    meta = {
        "metrics": {
            "n": 20,
            "overall_accuracy": 0.85,
            "kappa": 0.7,
            "macro_f1": 0.8,
            "class_ids": [1, 3],
            "per_class": [
                {"id": 1, "name": "crop", "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10},
                {"id": 3, "name": "water", "precision": 0.8, "recall": 0.9, "f1": 0.85, "support": 10},
            ],
            "confusion_matrix": [[8, 2], [1, 9]],
        }
    }
    out = stats.normalise_metrics(meta, LEGEND)
    assert out is not None
    assert out["confusion_matrix"] == {"class_ids": [1, 3], "matrix": [[8, 2], [1, 9]]}
    assert (out["overall_accuracy"], out["kappa"]) == (0.85, 0.7)
    assert out["per_class"]["3"]["precision"] == 0.8 and out["per_class"]["3"]["name"] == "water"
    assert stats.normalise_metrics({"metrics": None}, LEGEND) is None  # empty test split


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=200), st.integers(1, 5))
def test_histogram_percentiles_match_numpy_and_merge(values: list[int], n_parts: int) -> None:
    arr = np.array(values)
    hist = stats.histogram(arr)
    out = stats.histogram_stats(hist)
    assert out["mean"] == pytest.approx(arr.mean())
    assert (out["min"], out["max"]) == (arr.min(), arr.max())
    for q in stats.PERCENTILES:
        assert out["percentiles"][f"p{q}"] == np.percentile(arr, q, method="inverted_cdf")
    merged = np.zeros(1, np.int64)
    for part in np.array_split(arr, n_parts):
        merged = stats.add_histograms(merged, stats.histogram(part))
    assert stats.histogram_stats(merged) == out


def test_histogram_stats_empty() -> None:
    out = stats.histogram_stats(np.zeros(3, np.int64))
    assert out["mean"] is None and out["percentiles"]["p50"] is None


def test_sum_figures_sums_declared_quantities_only() -> None:
    items = [
        {"n": 1, "seed": 42, "per_class": {"1": 2}, "o": {"px": 1, "rule": "drop"}, "flag": True, "new_option": 3},
        {"n": 2.5, "seed": 42, "per_class": {"1": 1, "4": 4}, "o": {"px": 2, "rule": "drop"}, "flag": 1},
        {"seed": 42},  # a marker without the figures: skipped, not an error
    ]
    out = stats.sum_figures(items, ("n", "per_class.*", "o.px", "o.rule", "flag"))
    # Undeclared keys (seed, a new option) are never summed; strings and booleans never are either.
    assert out == {"n": 3.5, "per_class": {"1": 3, "4": 4}, "o": {"px": 3}, "flag": 1}
    assert stats.value_at({"a": {"b": 2}}, "a.b") == 2 and stats.value_at({"a": 1}, "a.b") is None


def test_declared_additive_figures_hold_no_option() -> None:
    """Every option of add_reference and sampling is kept out of the sums, whatever markers echo."""
    from lcms_tasks.stages import add_reference, sampling

    for stage, module in (("add_reference", add_reference), ("sampling", sampling)):
        declared = {p.split(".")[0] for p in stats.ADDITIVE_FIGURES[stage]}
        # Markers' "sources" are per-source statistics (polygons read, ...), not the option's list.
        assert declared & set(module.Options.model_fields) <= {"sources"}, stage
        assert all(p.split(".")[-1] not in {"priority", "seed"} for p in stats.ADDITIVE_FIGURES[stage])
        # Options a marker echoes are compared with the config instead.
        assert set(stats.MARKER_OPTIONS[stage].values()) <= set(module.Options.model_fields)


@pytest.mark.parametrize("res", [10.0, 20.0])
@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 20), st.integers(1, 20)),
        min_size=1,
        max_size=4,
    )
)
def test_zone_areas_match_grid_aligned_polygons_exactly(res: float, rects: list[tuple[int, ...]]) -> None:
    """Regions on pixel edges: pixel areas = polygon areas exactly, regions + outside = tile."""
    from affine import Affine

    size = 40
    transform = Affine(res, 0, 1000.0, 0, -res, 1000.0 + size * res)
    geoms = stats.disjoint(
        [box(1000 + x * res, 1000 + y * res, 1000 + (x + w) * res, 1000 + (y + h) * res) for x, y, w, h in rects]
    )
    zones = stats.zone_raster(geoms, transform, (size, size))
    tile_box = box(1000, 1000, 1000 + size * res, 1000 + size * res)
    for i, g in enumerate(geoms):
        assert (zones == i + 1).sum() * res**2 == pytest.approx(g.intersection(tile_box).area)
    inside = sum(g.intersection(tile_box).area for g in geoms)
    assert (zones == 0).sum() * res**2 == pytest.approx(tile_box.area - inside)


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 300), st.floats(0, 300), st.floats(15, 500), st.floats(15, 500))
def test_zone_area_of_unaligned_polygon_within_half_pixel_boundary(x: float, y: float, w: float, h: float) -> None:
    from affine import Affine

    res, size = 20.0, 40
    geom = box(x, y, x + w, y + h).intersection(box(0, 0, size * res, size * res))
    zones = stats.zone_raster([geom], Affine(res, 0, 0.0, 0, -res, size * res), (size, size))
    # Pixel-centre rule: the error is at most half a pixel along the boundary (plus the corners).
    assert abs((zones == 1).sum() * res**2 - geom.area) <= geom.length * res / 2 + 4 * res**2


def test_change_pieces_split_by_region_and_add_up() -> None:
    regions = stats.disjoint([box(0, 0, 10, 10), box(5, 0, 20, 10)])  # overlap: the first keeps it
    assert regions[1].area == pytest.approx(100.0)
    pieces = stats.zone_change_pieces([box(8, 2, 25, 4), box(30, 30, 31, 31)], regions)
    assert sorted(pieces[0]) == sorted([(1, 4.0), (2, 20.0), (0, 10.0)])
    assert pieces[1] == [(0, 1.0)]


# -- the stage --------------------------------------------------------------------------------------

TILE_PX = 64


def _setup_project(root: Path, legend_rename: dict[str, str] | None = None) -> Path:
    write_aoi(root / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    for cls in cfg["legends"]["land_cover"]:
        if legend_rename and cls["name"] in legend_rename:
            cls.setdefault("kind", cls["name"].replace(" ", "_").replace("-", "_"))
            cls["name"] = legend_rename[cls["name"]]
    (root / "project.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "project.yaml"


def _map_patch(tile: Any, classes: np.ndarray, confidence: np.ndarray) -> Any:
    from lcms_tasks import eopatch

    patch = eopatch.new_patch(tile, [])
    patch.mask_timeless["CLASS"] = classes[..., None].astype(np.uint8)
    patch.data_timeless["CONFIDENCE"] = confidence[..., None].astype(np.float32)
    return patch


class Fixture:
    """Upstream artefacts of the 2x2-tile project, written by hand, and what the report must show."""

    def __init__(self, root: Path) -> None:
        import geopandas as gpd

        from lcms_tasks import eopatch
        from lcms_tasks.config import load_config
        from lcms_tasks.context import RunContext
        from lcms_tasks.grid import project_tiles
        from lcms_tasks.runner import run_tiles

        self.cfg = load_config(_setup_project(root, {"cropland": "crop<land>&co"}))
        self.tiles = project_tiles(self.cfg)
        assert len(self.tiles) == 4
        for season in ("2023", "2024"):
            run_tiles("download", self.tiles, RunContext.create(self.cfg, season=season, run_id=f"dl-{season}"))
        self.ctx = RunContext.create(self.cfg, season="2024", run_id="rep-1")
        ctx, st_ = self.ctx, self.ctx.storage
        rng = np.random.default_rng(3)
        self.maps: dict[str, np.ndarray] = {}
        self.truth: dict[str, np.ndarray] = {}
        self.true_changes: dict[str, Any] = {}
        self.pred_changes: dict[str, list[Any]] = {}
        for k, tile in enumerate(self.tiles):
            p, _ = eopatch.load(
                st_,
                ctx.tile_uri("download", tile.id),
                features=["mask_timeless/TRUTH_LAND_COVER", "vector_timeless/TRUTH_CHANGES"],
            )
            truth = p.mask_timeless["TRUTH_LAND_COVER"][..., 0]
            self.truth[tile.id] = truth
            self.true_changes[tile.id] = p.vector_timeless["TRUTH_CHANGES"]
            classes = truth.copy()
            wrong = rng.random(truth.shape) < 0.1 * (k + 1)  # a different error rate per tile
            classes[wrong] = rng.integers(1, 9, wrong.sum())
            classes[:3, :] = 0  # a no-data strip
            self.maps[tile.id] = classes
            conf = np.full(truth.shape, 0.8, np.float32)
            # Tile 3 has only a raw prediction (postprocessing failed): the report falls back to it.
            stage = "prediction" if k == 3 else "postprocessing"
            eopatch.save(
                st_,
                ctx.tile_uri(stage, tile.id),
                _map_patch(tile, classes, conf),
                meta=ctx.marker_meta(stage, tile.id, {"steps": []}),
            )
            # Features: VALID_COUNT with a known distribution.
            fpatch = eopatch.new_patch(tile, [])
            valid = (np.arange(TILE_PX * TILE_PX).reshape(TILE_PX, TILE_PX) % (10 + k)).astype(np.uint16)
            fpatch.mask_timeless["VALID_COUNT"] = valid[..., None]
            fpatch.mask_timeless["NO_DATA"] = (valid == 0)[..., None]
            quality = {
                "dates_total": 30,
                "dates_dropped": k,
                "dropped_dates": [],
                "no_data_pixels": int((valid == 0).sum()),
                "mean_valid_observations": float(valid.mean()),
            }
            eopatch.save(
                st_,
                ctx.tile_uri("features", tile.id),
                fpatch,
                meta=ctx.marker_meta("features", tile.id, {"quality": quality, "feature_names": ["NDVI"]}),
            )
            # Reference + sampling, with the keys the stages write: tiles 0 and 1 have labelled pixels and
            # gave training samples; add_reference also ran on tile 2 and labelled nothing; tile 3 has no
            # add_reference output. Every sampling marker echoes the options (seed 42 as configured, but
            # tile 3 was sampled with seed 7).
            n = 100 * (k + 1) if k < 2 else 0
            sampling = {
                "n_samples": n,
                "per_class": {"1": n // 2, "2": n - n // 2} if n else {},
                "feature_names": ["f"] * 3,
                "skipped_reason": None if n else "no reference pixels",
                "max_per_class": 2000,
                "fraction": None,
                "seed": 7 if k == 3 else 42,
            }
            with st_.writing_dir(ctx.tile_uri("sampling", tile.id), ctx.marker_meta("sampling", tile.id, sampling)):
                pass
            if k < 3:
                labelled = {"1": 400 * (k + 1), "2": 100} if k < 2 else {}
                ref = {
                    "class_pixels": labelled,
                    "samplable_pixels": {c: v // 2 for c, v in labelled.items()},
                    "labelled_pixels": sum(labelled.values()),
                    "samplable_total": sum(v // 2 for v in labelled.values()),
                    "no_data_labelled_pixels": 5 if k < 2 else 0,
                    "overlap": {
                        "rule": "priority",
                        "overlap_pixels": 3,
                        "conflict_pixels": 2,
                        "conflict_resolved_pixels": 1,
                        "conflict_dropped_pixels": 1,
                    },
                    "unknown_codes": {"999": 2} if k < 2 else {},
                    "polygons_read": 10 if k < 2 else 0,
                    "polygons_used": 8 if k < 2 else 0,
                    "polygons_rasterised": 8 if k < 2 else 0,
                    "polygon_keys": list(range(8)) if k < 2 else [],
                    "sources": {"sources[0] synthetic_truth": {"polygons_read": 10 if k < 2 else 0, "too_small": 1}},
                    "erosion_px": 1,
                    "erosion_per_class": {},
                }
                with st_.writing_dir(
                    ctx.tile_uri("add_reference", tile.id), ctx.marker_meta("add_reference", tile.id, ref)
                ):
                    pass
            # Changes: tile 2 has none (no change artefact); others: the true changes' first polygon + a false one.
            if k == 2:
                continue
            true = self.true_changes[tile.id]
            x0, y0, _, _ = tile.bounds
            geoms = [box(x0 + 100, y0 + 100, x0 + 300, y0 + 200)]  # 200 x 100 m, maybe a false alarm
            rows = [{"change_id": 1, "from_class": 2, "to_class": 1}]
            if len(true):
                geoms.append(true.geometry.iloc[0])
                rows.append(
                    {
                        "change_id": 2,
                        "from_class": int(true["from_class"].iloc[0]),
                        "to_class": int(true["to_class"].iloc[0]),
                    }
                )
            self.pred_changes[tile.id] = geoms
            frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=tile.crs)
            frame["area_m2"] = frame.geometry.area
            frame["season_before"], frame["season_after"], frame["tile"] = "2023", "2024", tile.id
            names = {c.id: c.name for c in self.cfg.legend()}
            frame["from_name"] = [names[int(c)] for c in frame["from_class"]]
            frame["to_name"] = [names[int(c)] for c in frame["to_class"]]
            frame["confidence"] = 0.9
            meta = ctx.marker_meta("change_detection", tile.id, {"season_before": "2023", "season_after": "2024"})
            with st_.writing_dir(ctx.tile_uri("change_detection", tile.id), meta) as folder:
                write_changes(frame, folder / "changes.gpkg")  # the change stage's own writer and schema
        # The model learned classes 1-6: 7 (shrubland) was dropped for too few training samples and 8
        # (wetland) had none; both have test samples, which the model can only get wrong (columns 7, 8 zero).
        cm = rng.integers(0, 50, (8, 8))
        cm[:, 6:] = 0
        self.matrix = [[int(v) for v in row] for row in cm]
        test_counts = {str(i + 1): int(n) for i, n in enumerate(cm.sum(axis=1))}
        self.test_counts = test_counts
        names = {c.id: c.name for c in self.cfg.legend()}
        model_meta = ctx.marker_meta(
            "training",
            None,
            {
                "legend": [{"id": c.id, "name": c.name} for c in self.cfg.legend()],
                "label_encoding": {"class_ids": [1, 2, 3, 4, 5, 6], "class_names": [names[i] for i in range(1, 7)]},
                "hyperparameters": {"min_samples_per_class": 20, "drop_rare_classes": True, "seed": 42},
                "data": {
                    "class_counts": {"train": {}, "validation": {}, "test": test_counts},
                    "dropped_classes": [{"id": 7, "name": "shrubland", "train_samples": 5}],
                    "absent_classes": [8],
                },
                "metrics": {
                    "overall_accuracy": 0.87,
                    "kappa": 0.8,
                    "confusion_matrix": {"class_ids": list(range(1, 9)), "matrix": self.matrix},
                    # The trainer's shape: undefined ratios are 0.0, so unlearned classes score 0.
                    "per_class": [
                        {"id": i, "name": names[i], "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
                        for i in (7, 8)
                    ],
                },
            },
        )
        with st_.writing_dir(ctx.run_uri("training", "model"), model_meta) as folder:
            (folder / "metadata.json").write_text(json.dumps(model_meta))


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return Fixture(tmp_path_factory.mktemp("reporting"))


@pytest.fixture(scope="module")
def report(fixture: Fixture) -> tuple[dict[str, Any], Path]:
    from lcms_tasks.stages import reporting

    uris = reporting.run(fixture.ctx)
    assert uris == [fixture.ctx.run_uri("reporting", "report")]
    folder = fixture.ctx.storage.local_path(uris[0])
    return json.loads((folder / "report.json").read_text()), folder


def _areas(rows: list[dict[str, Any]]) -> float:
    return sum(r["area_km2"] for r in rows)


def test_report_areas_add_up(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    tile_km2 = (TILE_PX * fixture.cfg.grid.resolution_m) ** 2 / 1e6
    assert rep["total"]["area_km2"] == pytest.approx(4 * tile_km2)
    assert _areas(rep["total"]["class_areas"]) == pytest.approx(4 * tile_km2)
    for t in rep["tiles"]:
        assert _areas(t["class_areas"]) == pytest.approx(tile_km2)
        assert t["mean_confidence"] == pytest.approx(0.8)  # over mapped pixels only
        assert sum(t["zone_pixels"].values()) == TILE_PX**2
        # The class pixel counts are exactly those of the map written for the tile.
        expected = np.bincount(fixture.maps[t["id"]].ravel(), minlength=256)
        assert {r["id"]: r["pixels"] for r in t["class_areas"]} == {
            i: int(expected[i]) for i in range(256) if expected[i] or i <= 8
        }
    zones = [*rep["regions"], rep["outside_aoi"]]
    assert [r["name"] for r in rep["regions"]] == ["north", "south"]
    for cid in range(9):
        per_zone = sum(next(c["pixels"] for c in z["class_areas"] if c["id"] == cid) for z in zones)
        assert per_zone == next(c["pixels"] for c in rep["total"]["class_areas"] if c["id"] == cid)
    # Clipped to the AOI: regions' mapped area ~ AOI polygon area (pixel-centre rule, half a pixel on the boundary).
    res = fixture.cfg.grid.resolution_m
    aoi_km2 = (2 * 1280 - 30) ** 2 / 1e6  # write_aoi: 2x2 tiles of 1280 m, inset 15 m
    assert rep["aoi"]["polygon_area_km2"] == pytest.approx(aoi_km2)
    assert sum(r["polygon_area_km2"] for r in rep["regions"]) == pytest.approx(aoi_km2)
    perimeter = 4 * (2 * 1280 - 30) + 2 * (2 * 1280 - 30)  # outline plus the north/south boundary
    assert abs(rep["aoi"]["mapped_area_km2"] - aoi_km2) <= (perimeter * res / 2 + 8 * res**2) / 1e6
    assert rep["aoi"]["mapped_area_km2"] == pytest.approx(sum(r["area_km2"] for r in rep["regions"]))
    assert _areas(rep["aoi"]["class_areas"]) == pytest.approx(rep["aoi"]["mapped_area_km2"])
    assert rep["aoi"]["mapped_area_km2"] + rep["outside_aoi"]["area_km2"] == pytest.approx(rep["total"]["area_km2"])


def test_report_changes(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    all_geoms = [g for gs in fixture.pred_changes.values() for g in gs]
    ch = rep["total"]["changes"]
    assert ch["n_polygons"] == len(all_geoms)
    assert ch["area_km2"] == pytest.approx(sum(g.area for g in all_geoms) / 1e6)
    assert ch["n_tiles"] == 3
    forest_crop = next(r for r in ch["transitions"] if (r["from_id"], r["to_id"]) == (2, 1))
    assert forest_crop["from_name"] == "forest" and forest_crop["to_name"] == "crop<land>&co"
    assert forest_crop["count"] >= 3  # one false alarm per tile with a change artefact
    # Change areas split over regions + outside add up to the total.
    zones = [*rep["regions"], rep["outside_aoi"]]
    assert sum(z["changes"]["area_km2"] for z in zones) == pytest.approx(ch["area_km2"])
    assert "change_detection" in rep["missing_inputs"] and rep["missing_inputs"]["change_detection"] == [
        fixture.tiles[2].id
    ]


def test_report_metrics_quality_reference(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    assert rep["metrics"]["confusion_matrix"]["matrix"] == fixture.matrix
    assert rep["metrics"]["overall_accuracy"] == 0.87 and rep["metrics"]["kappa"] == 0.8
    assert rep["run"]["map_sources"] == {"postprocessing": 3, "prediction": 1}
    assert rep["missing_inputs"]["postprocessing"] == [fixture.tiles[3].id]
    assert rep["run"]["upstream_run_ids"]["training"] == ["rep-1"]
    q = rep["total"]["quality"]
    all_valid = np.concatenate([(np.arange(TILE_PX**2) % (10 + k)) for k in range(4)])
    assert q["valid_observations"]["mean"] == pytest.approx(all_valid.mean())
    assert q["valid_observations"]["percentiles"]["p50"] == np.percentile(all_valid, 50, method="inverted_cdf")
    assert q["no_data_pixels"] == int((all_valid == 0).sum())
    assert q["dates_dropped"] == 0 + 1 + 2 + 3
    ref = rep["total"]["reference"]
    assert ref["n_samples"] == 300 and ref["n_tiles_sampled"] == 2
    assert ref["skipped_reasons"] == {"no reference pixels": 2}
    assert ref["add_reference_totals"]["unknown_codes"] == {"999": 4}
    assert rep["tiles"][0]["reference"]["used_for_training"] is True
    assert "feature_names" not in rep["tiles"][0]["reference"]["sampling"]
    assert "polygon_keys" not in rep["tiles"][0]["reference"]["add_reference"]  # one per polygon: not repeated


def test_report_options_as_configured_sums_of_quantities(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    """4 tiles with markers echoing erosion 1 and seed 42: the report says 1 and 42, not 3 and 168."""
    rep, folder = report
    assert rep["options"]["add_reference"]["erosion_px"] == fixture.cfg.stages.add_reference.erosion_px == 1
    assert rep["options"]["sampling"]["seed"] == fixture.cfg.stages.sampling.seed == 42
    assert rep["options"]["add_reference"]["sources"][0]["type"] == "synthetic_truth"
    ref = rep["total"]["reference"]
    ar, sa = ref["add_reference_totals"], ref["sampling_totals"]
    for key in ("erosion_px", "erosion_per_class", "seed", "max_per_class", "fraction"):
        assert key not in ar and key not in sa
    assert "rule" not in ar["overlap"]
    # Quantities add up over the 3 tiles that ran add_reference and the 4 sampled.
    assert ar["labelled_pixels"] == 500 + 900 + 0
    assert ar["class_pixels"] == {"1": 400 + 800, "2": 200}
    assert ar["samplable_total"] == 250 + 450
    assert ar["overlap"] == {
        "overlap_pixels": 9,
        "conflict_pixels": 6,
        "conflict_resolved_pixels": 3,
        "conflict_dropped_pixels": 3,
    }
    assert ar["polygons_read"] == 20 and ar["sources"] == {
        "sources[0] synthetic_truth": {"polygons_read": 20, "too_small": 3}
    }
    assert sa == {"n_samples": 300, "per_class": {"1": 150, "2": 150}}
    # Tile 3 was sampled with another seed than configured: said, with the tile.
    diff = ref["options_differing_in_markers"]
    assert diff == [
        {
            "stage": "sampling",
            "option": "seed",
            "configured": 42,
            "in_markers": [{"value": 7, "n_tiles": 1, "tiles": [fixture.tiles[3].id]}],
        }
    ]
    page = (folder / "report.html").read_text()
    assert re.search(r"border erosion \(pixels\)</td><td[^>]*>1</td>", page)
    assert re.search(r"random seed</td><td[^>]*>42</td>", page)
    assert "168" not in page
    assert "random seed: configured 42, but 1 tile(s) with 7" in html_text(page)


def test_tiles_with_reference_are_tiles_with_labelled_pixels(
    fixture: Fixture, report: tuple[dict[str, Any], Path]
) -> None:
    rep, folder = report
    ref = rep["total"]["reference"]
    assert ref["n_tiles_with_reference"] == 2  # tile 2 ran add_reference but labelled nothing
    assert ref["n_tiles_with_add_reference"] == 3
    assert ref["n_tiles_without_labelled_pixels"] == 1
    tiles = {t["id"]: t["reference"] for t in rep["tiles"]}
    assert [tiles[t.id]["has_reference"] for t in fixture.tiles] == [True, True, False, False]
    assert tiles[fixture.tiles[2].id]["labelled_pixels"] == 0 and tiles[fixture.tiles[3].id]["labelled_pixels"] is None
    text = html_text((folder / "report.html").read_text())
    assert "tiles with reference (labelled pixels) 2" in text
    assert "tiles processed by add reference 3" in text


def test_report_dropped_classes_are_not_scored(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    rep, folder = report
    training = rep["training"]
    assert training["dropped_classes"] == [
        {"id": 7, "name": "shrubland", "train_samples": 5, "test_samples": fixture.test_counts["7"]}
    ]
    assert training["absent_classes"] == [{"id": 8, "name": "wetland", "test_samples": fixture.test_counts["8"]}]
    assert [c["id"] for c in training["classes_learned"]] == [1, 2, 3, 4, 5, 6]
    metrics = rep["metrics"]
    assert set(metrics["per_class"]) == {str(i) for i in range(1, 7)}  # no 0.000 rows for 7 and 8
    assert metrics["classes_not_learned"] == [7, 8]
    assert metrics["confusion_matrix"]["matrix"] == fixture.matrix  # their test samples stay, as errors
    page = (folder / "report.html").read_text()
    # The section says what its figures are: a test split, not a probability sample.
    metrics_html = page[
        page.index("<h2>Model test metrics: test split (not a probability sample)</h2>") : page.index(
            "<h2>Evaluation against"
        )
    ]
    row = re.search(r"<tr><td[^>]*>shrubland</td>(.*?)</tr>", metrics_html)
    assert row is not None and "0.000" not in row.group(1)
    assert "dropped from training: 5 training samples, fewer than the minimum of 20" in row.group(1)
    assert re.search(r"<tr><td[^>]*>wetland</td>.*?not learned: no training sample", metrics_html)
    assert "Classes dropped from training for too few samples: shrubland (5 training" in html_text(metrics_html)


# Data shown verbatim, not labels: tile ids, run ids, file names and URIs.
_DATA_TOKENS = re.compile(r"\S*/\S*|\S+\.(?:npy|gz|gpkg|png|json|html|yaml|geojson)\b|\b\d+_\d+_\d+\b")


def html_text(page: str) -> str:
    """The visible text of an HTML page: style and tags removed, entities decoded, whitespace collapsed."""
    import html as html_lib

    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", page))
    return re.sub(r"\s+", " ", text).strip()


def raw_keys(page: str, data: list[str]) -> list[str]:
    """snake_case tokens in the visible text of ``page``, once ``data`` values (run ids...) and paths are removed."""
    text = html_text(page)
    for value in sorted(data, key=len, reverse=True):
        text = text.replace(value, " ")
    return re.findall(r"\b[a-z]+_[a-z_]+", _DATA_TOKENS.sub(" ", text))


def test_report_html_shows_words_not_keys(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    rep, folder = report
    page = (folder / "report.html").read_text()
    run_ids = [rep["run"]["run_id"], *[r for ids in rep["run"]["upstream_run_ids"].values() for r in ids]]
    assert raw_keys(page, run_ids) == []
    assert raw_keys("<p>n_tiles_with_reference</p>", []) == ["n_tiles_with_reference"]  # the check itself works
    text = html_text(page)
    assert "Tiles: " not in text and "This report covers all 4 tiles of the project." in text
    # Class ids appear with their legend names: per-class counts name the classes.
    assert "labelled pixels per class crop<land>&co 1,200; forest 200" in text


def test_report_evaluation_against_truth(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    ev = rep["evaluation"]
    assert ev["n_eval_tiles"] == 2  # tiles 2 and 3 gave no samples
    hits = total = 0
    for tile in fixture.tiles[2:]:
        m, t = fixture.maps[tile.id], fixture.truth[tile.id]
        keep = (m > 0) & (t > 0)
        hits += int((m[keep] == t[keep]).sum())
        total += int(keep.sum())
    assert ev["overall_accuracy"] == pytest.approx(hits / total)
    import shapely

    pred_area = inter = true_area = 0.0
    for tile in fixture.tiles:
        if tile.id not in fixture.pred_changes:
            continue  # no change artefact: the tile is left out of the change evaluation
        p = shapely.union_all(fixture.pred_changes[tile.id])
        t = shapely.union_all(list(fixture.true_changes[tile.id].geometry))
        pred_area, true_area, inter = pred_area + p.area, true_area + t.area, inter + p.intersection(t).area
    assert ev["predicted_change_area_km2"] == pytest.approx(pred_area / 1e6)
    assert ev["true_change_area_km2"] == pytest.approx(true_area / 1e6)
    assert ev["change_precision"] == pytest.approx(inter / pred_area)
    assert ev["change_recall"] == pytest.approx(inter / true_area)
    assert 0 < ev["change_precision"] < 1


def test_report_html(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    _, folder = report
    page = (folder / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"class_areas.png", "confusion.png", "truth_confusion.png"} <= set(images)
    assert any(i.startswith("map_") for i in images)
    for name in images:
        assert (folder / name).is_file() and (folder / name).read_bytes()[:4] == b"\x89PNG"
    for cls in fixture.cfg.legend():
        if cls.name != "crop<land>&co":
            assert cls.name in page
    assert "crop&lt;land&gt;&amp;co" in page and "crop<land>" not in page  # escaped
    for region in ("north", "south", "outside AOI"):
        assert region in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: the page was not rendered in a browser")
    shot = folder.parent / "render.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            (folder / "report.html").as_uri(),
        ],
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_report_with_only_maps(tmp_path: Path) -> None:
    """Every optional input missing: the report is written and lists them; no maps at all is an error."""
    from lcms_tasks import eopatch
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import StageError
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.stages import reporting

    cfg = load_config(_setup_project(tmp_path))
    ctx = RunContext.create(cfg, season="2023", run_id="r")
    with pytest.raises(StageError, match="has a readable map"):
        reporting.run(ctx)
    assert not ctx.storage.exists(ctx.run_uri("reporting", "report"))
    tiles = project_tiles(cfg)
    tile = tiles[1]
    classes = np.ones(tile.shape, np.uint8)
    eopatch.save(
        ctx.storage,
        ctx.tile_uri("postprocessing", tile.id),
        _map_patch(tile, classes, np.ones(tile.shape)),
        meta=ctx.marker_meta("postprocessing", tile.id, {}),
    )
    reporting.run(ctx)
    rep = json.loads(ctx.storage.read_bytes(ctx.run_uri("reporting", "report", "report.json")))
    assert rep["metrics"] is None and rep["evaluation"] is None
    assert rep["missing_inputs"]["training"] == ["model"]
    assert sorted(rep["missing_inputs"]["features"]) == sorted(t.id for t in tiles)
    assert rep["run"]["map_sources"] == {"postprocessing": 1, "missing": 3}
    crop = next(r for r in rep["total"]["class_areas"] if r["id"] == 1)
    assert crop["share"] == pytest.approx(0.25)
    assert _areas(rep["total"]["class_areas"]) == pytest.approx(rep["total"]["area_km2"])
    assert rep["total"]["quality"]["valid_observations"]["mean"] is None
    assert (ctx.storage.local_path(ctx.run_uri("reporting", "report")) / "report.html").is_file()


def test_report_is_complete_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.report import html
    from lcms_tasks.stages import reporting

    cfg = load_config(_setup_project(tmp_path))
    ctx = RunContext.create(cfg, season="2023", run_id="r")
    tile = project_tiles(cfg)[0]
    eopatch.save(
        ctx.storage,
        ctx.tile_uri("prediction", tile.id),
        _map_patch(tile, np.full(tile.shape, 2, np.uint8), np.ones(tile.shape)),
        meta=ctx.marker_meta("prediction", tile.id, {}),
    )

    def boom(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(html, "render", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        reporting.run(ctx)
    assert not ctx.storage.is_complete(ctx.run_uri("reporting", "report"))
    assert ctx.storage.list_names(ctx.run_uri("reporting")) == []


def test_report_of_a_tile_subset_says_so(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    """A subset run reads only its tiles: areas and totals are the subset's, and the page says which tiles."""
    from lcms_tasks.context import RunContext
    from lcms_tasks.report import html
    from lcms_tasks.stages import reporting

    full, _ = report
    assert full["run"]["tile_subset"] is None and full["run"]["is_subset"] is False
    assert full["run"]["n_tiles"] == full["run"]["n_project_tiles"] == 4
    picked = [fixture.tiles[2], fixture.tiles[0]]
    ctx = RunContext.create(fixture.cfg, season="2024", run_id="rep-sub", subset=[t.id for t in picked])
    rep, *_ = reporting.build_report(ctx)  # computes without writing: the module's report stays in place
    run = rep["run"]
    assert run["is_subset"] is True and run["tile_subset"] == [t.id for t in picked]
    assert (run["n_tiles"], run["n_project_tiles"]) == (2, 4)
    assert [t["id"] for t in rep["tiles"]] == [t.id for t in picked]
    tile_km2 = (TILE_PX * fixture.cfg.grid.resolution_m) ** 2 / 1e6
    assert rep["total"]["area_km2"] == pytest.approx(2 * tile_km2)
    expected = sum(np.bincount(fixture.maps[t.id].ravel(), minlength=256) for t in picked)
    assert {r["id"]: r["pixels"] for r in rep["total"]["class_areas"] if r["pixels"]} == {
        i: int(n) for i, n in enumerate(expected) if n
    }
    # Only the subset's inputs: tile 3 (no post-processed map, no add_reference) is not reported missing.
    assert "postprocessing" not in rep["missing_inputs"]
    assert rep["missing_inputs"]["change_detection"] == [fixture.tiles[2].id]
    ref = rep["total"]["reference"]
    assert (ref["n_tiles_with_add_reference"], ref["n_tiles_with_reference"], ref["n_samples"]) == (2, 1, 100)
    assert rep["total"]["quality"]["dates_dropped"] == 2 + 0
    # The AOI figure is the AOI within the subset's tiles (the AOI covers the 4 tiles, inset 15 m).
    assert rep["aoi"]["polygon_area_km2"] < 0.6 * full["aoi"]["polygon_area_km2"]
    page = html.render(rep, {})
    text = html_text(page)
    first = text.index("Tile subset:")
    assert first < text.index("Maps")  # at the top, before any figure
    assert "this report covers 2 of the project's 4 tiles" in text
    assert f"({picked[0].id}, {picked[1].id})" in text
    assert "AOI area within these tiles" in text
    assert raw_keys(page, [run["run_id"], *[r for ids in run["upstream_run_ids"].values() for r in ids]]) == []


def test_report_leaves_the_gaps_out_and_lists_them(fixture: Fixture) -> None:
    """Tiles an upstream run failed on (within tolerance): out of every figure, listed with the reason."""
    from lcms_tasks.report.html import render
    from lcms_tasks.stages.reporting import build_report

    gap = fixture.ctx.tiles()[0].id
    reason = "features failed (run ft-1): CorruptArrayError: truncated"
    rep = build_report(fixture.ctx.with_excluded({gap: reason}))[0]
    assert rep["run"]["gaps"] == [{"tile": gap, "reason": reason}] and rep["run"]["n_tiles"] == 3
    assert gap not in {row["id"] for row in rep["tiles"]}
    text = html_text(render(rep, {"mosaics": []}))
    assert "this report covers 3 of the project's 4 tiles; 1 failed in a stage of the run" in text
    assert f"{gap} {reason}" in text and "lcms rerun-failed STAGE --run-id RUN" in text
