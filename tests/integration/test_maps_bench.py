"""The services benchmarks end to end on small inputs (map tiles, the validation queue) and their verdicts.

No timing threshold: speed is what the benchmark reports, not what the tests assert.
"""

from __future__ import annotations

from bench.maps import ZOOMS, bench_map_tile
from tests.store_fixtures import PG_ADMIN_URL, admin_connection


def test_bench_map_tile_reports_the_figures() -> None:
    admin_connection().close()  # skips, saying so, when the test server is unreachable
    result = bench_map_tile(PG_ADMIN_URL, requests=10, tile_px=64)
    for kind in ("map", "imagery"):
        figures = result[kind]
        assert figures["requests"] == 10 and sum(figures["statuses"].values()) == 10
        assert figures["statuses"].get(200, 0) >= 5  # tiles inside the data are PNGs
        assert 0 < figures["min_ms"] <= figures["median_ms"] <= figures["p95_ms"] <= figures["max_ms"]
        assert set(figures["median_ms_by_zoom"]) == set(ZOOMS)
    assert result["tiles"] == 4 and result["target_ms"] == 50.0 and isinstance(result["met"], bool)


def test_bench_queue_reports_the_first_page_and_the_filtered_one() -> None:
    admin_connection().close()
    from bench.validation import bench_queue

    result = bench_queue(PG_ADMIN_URL, 3_000, requests=3)
    assert result["n"] == 3_000 and result["requests"] == 3
    assert result["median_ms"] > 0 and result["in_database_ms"] > 0
    filtered = result["filtered"]
    assert filtered["items"] == 50 and 0 < filtered["total"] < 3_000  # one pair, still to decide
    assert filtered["params"]["status"] == "detected"
    assert result["target_ms"] == 300.0 and isinstance(result["ok"], bool)


def test_services_verdicts_name_every_figure_and_what_was_missed() -> None:
    from bench.services import TARGETS, verdicts

    result = {
        "load": {"polygons_per_s": 60_000.0},
        "bbox": {"median_ms": 40.0, "p95_ms": 500.0},
        "tile": {"median_ms": 90.0},
        "cog": {"seconds": 0.1},
        "map_tile": {"map": {"median_ms": 75.0}},
        "queue": {"median_ms": 120.0},
    }
    out = verdicts(result)
    assert set(out) == set(TARGETS)
    assert out["load_polygons_per_s"]["met"] and out["queue_first_page_median_ms"]["met"]
    assert out["bbox_p95_ms"] == {"value": 500.0, "target": 250.0, "met": False, "missed_by": "100%"}
    assert out["map_tile_median_ms"]["met"] is False and out["map_tile_median_ms"]["missed_by"] == "50%"
    del result["queue"]
    assert verdicts(result)["queue_first_page_median_ms"] == {"value": None, "target": 300.0, "met": None}
