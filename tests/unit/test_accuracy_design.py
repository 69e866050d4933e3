"""The sample design's pure parts: sample size, allocation (worked by hand), strata rasters and the draw."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lcms_tasks.accuracy import AccuracyInputError
from lcms_tasks.accuracy.allocation import allocate, anticipated_oa_se, cochran_sample_size
from lcms_tasks.accuracy.frame import OUTSIDE, StratifiedDraw, make_strata, stratum_counts, stratum_raster

# -- sample size and allocation --------------------------------------------------------------------------

# Olofsson et al. (2014)'s strata (pixels) with anticipated user's accuracies 0.70, 0.60, 0.90, 0.95.
SIZES = [200_000, 150_000, 3_200_000, 6_450_000]
UA = [0.70, 0.60, 0.90, 0.95]


def test_cochran_sample_size_by_hand() -> None:
    # W = 0.020, 0.015, 0.320, 0.645; S = sqrt(U(1 − U)) = 0.458258, 0.489898, 0.3, 0.217945
    # Σ W S = 0.0091652 + 0.0073485 + 0.096 + 0.1405745 = 0.2530881
    # n = (0.2530881 / 0.01)² = 640.536 → 641 (the figure of Olofsson et al. 2014, section 5.1.3)
    assert cochran_sample_size(SIZES, UA, 0.01) == 641
    # Halving the target quadruples n: (0.2530881 / 0.005)² = 2562.1 → 2563
    assert cochran_sample_size(SIZES, UA, 0.005) == 2563
    # One stratum with U = 0.9 and a target of 0.03: (0.3 / 0.03)² = 100 exactly, not 101
    assert cochran_sample_size([5000], [0.9], 0.03) == 100


def test_allocation_minimum_for_rare_strata_then_proportional_by_hand() -> None:
    n_h = allocate(SIZES, 641, 75)
    # Proportional shares 641·W = 12.82, 9.62 (< 75: both fixed at 75), then the 491 left over the
    # two others in proportion 0.320 : 0.645 → 162.82 and 328.18 → floors 162 + 328 = 490, the last
    # unit to the larger fraction (0.82) → (75, 75, 163, 328).
    assert n_h.tolist() == [75, 75, 163, 328]
    # Anticipated SE(O)² = Σ W² S² / n_h = 0.0004·0.21/75 + 0.000225·0.24/75 + 0.1024·0.09/163
    #   + 0.416025·0.0475/328 = 1.12e-6 + 7.2e-7 + 5.6540e-5 + 6.0247e-5 = 1.18627e-4 → 0.010892:
    # above the 0.01 target, as the minimums move units away from the Neyman allocation.
    assert anticipated_oa_se(SIZES, UA, n_h) == pytest.approx(0.010892, abs=1e-6)


def test_allocation_cascades_until_no_share_is_below_the_minimum() -> None:
    # Sizes 10, 250, 740; n = 100, minimum 24.  Shares 1, 25, 74: the first is below min(24, 10) = 10
    # → fixed at its 10 pixels; the 90 left: 90·250/990 = 22.7 < 24 → fixed at 24; the rest, 66, to the last.
    assert allocate([10, 250, 740], 100, 24).tolist() == [10, 24, 66]
    # A stratum smaller than the minimum is taken whole: sizes 30, 10000, 5000, n = 300, minimum 50:
    # 300·30/15030 = 0.6 → all 30; 270 left → 180 and 90.
    assert allocate([30, 10_000, 5_000], 300, 50).tolist() == [30, 180, 90]


def test_allocation_edge_cases() -> None:
    # Minimums need more than n: every stratum its minimum (n for U = 0.9, SE 0.1 is (0.3/0.1)² = 9).
    assert cochran_sample_size([1000, 1000], [0.9, 0.9], 0.1) == 9
    assert allocate([1000, 1000], 9, 50).tolist() == [50, 50]
    # n at least the population: a census.
    assert allocate([5, 5], 100, 50).tolist() == [5, 5]
    # Equal shares 3.33: floors 3, 3, 3 and the one left to the first stratum (ties by order).
    assert allocate([1000, 1000, 1000], 10, 0).tolist() == [4, 3, 3]
    # An empty stratum gets nothing.
    assert allocate([0, 100, 300], 40, 5).tolist() == [0, 10, 30]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cochran_sample_size([10, 20], [0.9], 0.01), r"1 anticipated user's accuracies for 2 strata"),
        (lambda: cochran_sample_size([10, 20], [0.9, 1.2], 0.01), r"must be in \(0, 1\]"),
        (lambda: cochran_sample_size([10, 20], [0.9, 0.8], 0), r"target standard error must be > 0"),
        (lambda: allocate([0, 0], 10, 5), r"every stratum is empty"),
        (lambda: allocate([10, 2.5], 10, 5), r"whole numbers of pixels"),
        (lambda: allocate([10, 20], 0, 5), r"sample size must be >= 1"),
        (lambda: allocate([10, 20], 5, -1), r"minimum per stratum must be >= 0"),
    ],
)
def test_allocation_refuses_bad_input(call: object, message: str) -> None:
    with pytest.raises(AccuracyInputError, match=message):
        call()  # type: ignore[operator]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 50_000), min_size=1, max_size=8).filter(lambda s: sum(s) > 0),
    st.integers(1, 3000),
    st.integers(0, 120),
)
def test_allocation_invariants(sizes: list[int], n_total: int, minimum: int) -> None:
    n_h = allocate(sizes, n_total, minimum)
    size = np.array(sizes)
    floor = np.minimum(minimum, size)
    assert np.all(n_h >= floor) and np.all(n_h <= size)
    # The total is n, unless the minimums need more (then exactly them) or n exceeds the population.
    expected = min(max(n_total, int(floor.sum())), int(size.sum()))
    assert int(n_h.sum()) == expected
    # Strata above their minimum and below their size share one rate c (n_h = c N_h before rounding, and
    # rounding moves n_h by less than 1): |n_i/N_i − n_j/N_j| < 1/N_i + 1/N_j.
    free = np.flatnonzero((n_h > floor) & (n_h < size))
    for i in free:
        for j in free:
            assert abs(n_h[i] / size[i] - n_h[j] / size[j]) < 1 / size[i] + 1 / size[j] + 1e-12


# -- strata rasters ---------------------------------------------------------------------------------------


def test_strata_are_change_then_buffer_then_class() -> None:
    strata = make_strata([(1, "forest"), (2, "crop")], [(1, "forest -> crop")])
    assert [(s.name, s.kind) for s in strata] == [
        ("change: forest -> crop", "change"),
        ("buffer", "buffer"),
        ("forest", "class"),
        ("crop", "class"),
    ]
    classes = np.array(
        [
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 2, 1, 1, 1],
            [1, 1, 1, 1, 1, 0],
            [2, 2, 2, 2, 1, 9],
        ],
        dtype=np.uint8,
    )
    change = np.zeros_like(classes)
    change[2, 2] = 1  # one changed pixel
    aoi = np.ones(classes.shape, dtype=bool)
    aoi[0, 5] = False
    raster = stratum_raster(strata, classes, change=change, in_aoi=aoi, buffer_px=1)
    # change (0) at (2, 2); buffer (1) in the 3 x 3 square around it; the rest by class; off the frame:
    # no data (3, 5), an id outside the legend (4, 5), outside the AOI (0, 5).
    assert raster.tolist() == [
        [2, 2, 2, 2, 2, OUTSIDE],
        [2, 1, 1, 1, 2, 2],
        [2, 1, 0, 1, 2, 2],
        [2, 1, 1, 1, 2, OUTSIDE],
        [3, 3, 3, 3, 2, OUTSIDE],
    ]
    assert stratum_counts(raster, 4).tolist() == [1, 8, 14, 4]
    # Buffer of 2: the 5 x 5 square (clipped by the tile) minus the change itself.
    wide = stratum_raster(strata, classes, change=change, in_aoi=aoi, buffer_px=2)
    assert int(np.sum(wide == 1)) == 5 * 5 - 1  # rows 0-4, columns 0-4, all in the frame, minus the change
    # Without change strata every frame pixel is its class: 22 forest, 5 crop (the changed pixel is crop).
    plain = stratum_raster(make_strata([(1, "forest"), (2, "crop")], None), classes, in_aoi=aoi)
    assert stratum_counts(plain, 2).tolist() == [22, 5]


def test_strata_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match=r"stratum name\(s\) 'buffer' are used twice"):
        make_strata([(1, "buffer")], [(1, "a -> b")])


# -- the draw ---------------------------------------------------------------------------------------------


def _offer(draw: StratifiedDraw, tiles: dict[str, np.ndarray]) -> None:
    for name, raster in tiles.items():
        draw.add(name, raster, ["a", "b"], {"value": raster * 10 + 1})


TILES = {  # 3 tiles, strata a (0) and b (1): N_a = 3 + 0 + 2 = 5, N_b = 5 + 5 + 4 = 14
    "t1": np.array([[0, 0, 0, 1], [1, 1, 1, 1]], dtype=np.int16),
    "t2": np.array([[1, 1, OUTSIDE, 1], [1, 1, OUTSIDE, OUTSIDE]], dtype=np.int16),
    "t3": np.array([[0, 1, 1, 1], [1, 0, OUTSIDE, OUTSIDE]], dtype=np.int16),
}


def test_draw_is_without_replacement_per_stratum_and_deterministic() -> None:
    a, b, other = StratifiedDraw(10, 7), StratifiedDraw(10, 7), StratifiedDraw(10, 8)
    for draw in (a, b, other):
        _offer(draw, TILES)
    assert a.sizes == {"a": 5, "b": 14}
    points = a.take({"a": 5, "b": 4})
    assert points == b.take({"a": 5, "b": 4})
    keys = [(p["tile"], p["row"], p["col"]) for p in points]
    assert len(keys) == 9 == len(set(keys))
    for p in points:
        stratum = TILES[p["tile"]][p["row"], p["col"]]
        assert ["a", "b"][stratum] == p["stratum"] and p["value"] == stratum * 10 + 1
    # Stratum a has 5 pixels and 5 points: every one of them (a census), in tile, row, column order.
    assert [k for p, k in zip(points, keys, strict=True) if p["stratum"] == "a"] == [
        ("t1", 0, 0), ("t1", 0, 1), ("t1", 0, 2), ("t3", 0, 0), ("t3", 1, 1)
    ]  # fmt: skip
    assert other.take({"b": 4}) != a.take({"b": 4})


def test_draw_does_not_depend_on_the_order_of_the_tiles() -> None:
    forward, backward = StratifiedDraw(6, 3), StratifiedDraw(6, 3)
    _offer(forward, TILES)
    _offer(backward, dict(reversed(TILES.items())))
    assert forward.take({"a": 2, "b": 6}) == backward.take({"a": 2, "b": 6})


def test_draw_keeps_the_same_points_with_a_larger_capacity() -> None:
    small, large = StratifiedDraw(3, 5), StratifiedDraw(14, 5)
    _offer(small, TILES)
    _offer(large, TILES)
    assert small.take({"a": 3, "b": 3}) == large.take({"a": 3, "b": 3})


def test_draw_gives_every_pixel_of_a_stratum_the_same_inclusion_probability() -> None:
    hits = {name: np.zeros(r.shape) for name, r in TILES.items()}
    reps = 3000
    for seed in range(reps):
        draw = StratifiedDraw(4, seed)
        _offer(draw, TILES)
        for p in draw.take({"a": 2, "b": 4}):
            hits[p["tile"]][p["row"], p["col"]] += 1
    # π = 2/5 = 0.4 in stratum a and 4/14 in stratum b for every pixel; binomial SE sqrt(π(1 − π)/3000).
    for name, raster in TILES.items():
        share = hits[name] / reps
        for stratum, pi in ((0, 2 / 5), (1, 4 / 14)):
            assert np.all(np.abs(share[raster == stratum] - pi) < 5 * math.sqrt(pi * (1 - pi) / reps))
        assert np.all(share[raster == OUTSIDE] == 0)


def test_draw_refuses_more_points_than_pixels_or_capacity() -> None:
    draw = StratifiedDraw(3, 0)
    _offer(draw, TILES)
    with pytest.raises(ValueError, match=r"stratum 'a': 6 points asked of 5 pixels"):
        draw.take({"a": 6})
    with pytest.raises(ValueError, match=r"stratum 'b': 4 points asked of a draw that keeps 3 per stratum"):
        draw.take({"b": 4})
    with pytest.raises(ValueError, match=r"stratum 'c': 1 points asked of 0 pixels"):
        draw.take({"c": 1})
    with pytest.raises(ValueError, match="tile 't1' is offered twice"):
        _offer(draw, {"t1": TILES["t1"]})


def test_max_sample_size_bounds_every_allocation() -> None:
    from lcms_tasks.accuracy.design import DesignOptions, max_sample_size

    # (max S_h / S(Ô))² with S = sqrt(0.5 · 0.5) = 0.5 for the change strata: (0.5 / 0.02)² = 625.
    options = DesignOptions(target_se=0.02, min_per_stratum=50, expected_ua_by_stratum={"change": 0.5})
    assert max_sample_size(options) == 625
    assert max_sample_size(DesignOptions(sample_size=80, min_per_stratum=100)) == 100
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(1, 100_000, rng.integers(1, 12))
        ua = rng.uniform(0.5, 0.99, sizes.size)
        n = allocate(sizes, cochran_sample_size(sizes, ua, 0.02), 50)
        assert n.max() <= max_sample_size(DesignOptions(target_se=0.02, expected_ua=0.5))


def test_builder_names_change_strata_by_transition_whatever_each_tiles_code_table() -> None:
    """Tiles numbered by their own code tables (as the reporting stage does): strata by transition, codes anew."""
    from lcms_tasks.accuracy.design import DesignBuilder, DesignOptions
    from lcms_tasks.grid import Tile
    from lcms_tasks.publish.tiles import TransitionCode

    legend = [(1, "crop"), (2, "forest"), (3, "water")]
    options = DesignOptions(min_per_stratum=2, sample_size=20, buffer_px=0, seed=1)
    builder = DesignBuilder(legend, options, values=("label",))
    tiles = [Tile(32638, 0, c, 4, 10.0) for c in (0, 1)]
    classes = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 2, 2], [3, 3, 1, 1]], dtype=np.uint8)
    everywhere = np.ones(classes.shape, dtype=bool)
    change = np.zeros(classes.shape, dtype=np.uint8)
    change[0, 2:] = 1
    # Code 1 is forest -> crop in the first tile, crop -> water in the second.
    tables = [[TransitionCode(1, 2, 1, "forest", "crop")], [TransitionCode(1, 1, 3, "crop", "water")]]
    for tile, table in zip(tiles, tables, strict=True):
        builder.add_tile(tile, classes, in_aoi=everywhere, change=change, codes=table, values={"label": classes})
    design = builder.finish(project="p", season="2024", config=None, source="test")
    strata = {s["name"]: s for s in design.meta["strata"]}
    assert list(strata)[:2] == ["change: crop -> water", "change: forest -> crop"]
    codes = {name: s["transition_code"] for name, s in strata.items() if s["kind"] == "change"}
    assert codes == {"change: crop -> water": 1, "change: forest -> crop": 2}  # by (from id, to id)
    assert strata["change: crop -> water"]["pixels"] == strata["change: forest -> crop"]["pixels"] == 2
    assert sum(s["pixels"] for s in strata.values()) == 32
    points = design.points
    changed = points[points["stratum"].str.startswith("change")]
    assert (changed["change"] == changed["stratum"].str.removeprefix("change: ")).all()
    assert (points[~points["stratum"].str.startswith("change")]["change"] == "no change").all()
    assert (points["label"] == points["map_class_id"]).all()  # the extra values travel with the points
    with pytest.raises(ValueError, match="no label array offered"):
        builder.add_tile(Tile(32638, 1, 0, 4, 10.0), classes, in_aoi=everywhere)


# -- assessing a design (no map needed) -------------------------------------------------------------------


def test_assess_reproduces_stehman_2014_from_a_design_and_labels() -> None:
    """Stehman (2014)'s 40 points as a design (strata A-D of 40,000 ... 10,000 pixels of 30 m) and labels."""
    import pandas as pd

    from lcms_tasks.accuracy.assess import assess

    strata = list("".join(["AAAAAAAAAA", "BBBBBBBBBB", "CCCCCCCCCC", "DDDDDDDDDD"]))
    mapped = list("".join(["AAAAAAABBB", "ABBBBBBBBB", "BBCCCCCCBB", "DDDDDDDDDD"]))
    ref = list("".join(["AAAAACBABC", "ABBBBBAABB", "CCCCCDDBBA", "DDDDDDDCCB"]))
    sizes = {"A": 40_000, "B": 30_000, "C": 20_000, "D": 10_000}
    meta = {
        "pixel_area_m2": 900.0,
        "legend": [{"id": k + 1, "name": c} for k, c in enumerate("ABCD")],
        "strata": [{"name": h, "kind": "class", "pixels": n} for h, n in sizes.items()],
    }
    points = pd.DataFrame(
        {"point_id": [f"P{k:02d}" for k in range(40)], "stratum": strata, "map_class": mapped, "reference": ""}
    )
    labels = {f"P{k:02d}": r for k, r in enumerate(ref)}
    est, figures = assess(meta, points, labels)
    assert est.overall_accuracy == pytest.approx(0.63)
    assert est.area_proportion[0] == pytest.approx(0.35) and est.area_proportion_se[0] == pytest.approx(
        0.082248, abs=1e-6
    )
    assert est.users_accuracy[1] == pytest.approx(27 / 47) and est.producers_accuracy_se[1] == pytest.approx(
        0.116548, abs=1e-6
    )
    # Areas in hectares: 100,000 pixels of 0.09 ha = 9,000 ha; class A 0.35 of it.
    assert est.total_area == pytest.approx(9_000) and est.area[0] == pytest.approx(3_150)
    assert figures["n_labelled"] == 40 and figures["n_unlabelled"] == 0
    # Unlabelled points are left out and counted; a stratum left with no label at all is an error.
    del labels["P39"]
    _, figures = assess(meta, points, labels)
    assert figures["n_unlabelled"] == 1 and "1 of 40 point(s) have no label" in figures["notes"][0]
    only_a = {p: r for p, r in labels.items() if int(p[1:]) < 10}
    with pytest.raises(AccuracyInputError, match=r"stratum 'B': none of its 10 point\(s\) has a label"):
        assess(meta, points, only_a)
    with pytest.raises(AccuracyInputError, match=r"point 'Q1' is not a point of the design"):
        assess(meta, points, {**labels, "Q1": "A"})
