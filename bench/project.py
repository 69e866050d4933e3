"""The benchmark's synthetic project: one tile, two seasons, storage in a scratch folder."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

#: Seasons of the project: the "after" season is measured, the "before" one feeds change detection.
BEFORE, AFTER = "2022", "2023"


@dataclass(frozen=True)
class SeasonPlan:
    """Length and revisit of the simulated season (same month-days in both seasons)."""

    start: tuple[int, int]  # (month, day) of the first day
    end: tuple[int, int]  # (month, day) of the last day
    revisit_days: int
    missing_date_fraction: float

    def dates(self, year: int) -> tuple[dt.date, dt.date]:
        """First and last day of the season in ``year``."""
        return dt.date(year, *self.start), dt.date(year, *self.end)


#: ~70 acquisitions: 3-day revisit from March to September, 5 % of the nominal dates missing (68 dates).
FULL_SEASON = SeasonPlan(start=(3, 1), end=(9, 30), revisit_days=3, missing_date_fraction=0.05)
#: ~30 acquisitions: 5-day revisit from April to August (29 dates).
QUICK_SEASON = SeasonPlan(start=(4, 1), end=(8, 31), revisit_days=5, missing_date_fraction=0.05)


def _demo_legends() -> dict[str, Any]:
    text = (REPO / "configs" / "demo.yaml").read_text(encoding="utf-8")
    demo = yaml.safe_load(text.replace("${LCMS_STORAGE_ROOT:-../lcms-data}", "unused"))
    legends: dict[str, Any] = demo["legends"]
    return legends


def _write_aoi(path: Path, size_px: int, resolution_m: float) -> None:
    """A polygon strictly inside one grid tile (UTM zone 38N, near the zone's central meridian)."""
    import geopandas as gpd
    from shapely.geometry import box

    side = size_px * resolution_m
    col, row = round(500_000 / side), round(4_400_000 / side)
    inset = min(side / 10, 50.0)
    x0, y0 = col * side, row * side
    geom = box(x0 + inset, y0 + inset, x0 + side - inset, y0 + side - inset)
    gpd.GeoDataFrame({"region": ["bench"]}, geometry=[geom], crs=32638).to_file(path, driver="GeoJSON")


def config_dict(size_px: int, season: SeasonPlan, seed: int) -> dict[str, Any]:
    """The project config (as a mapping) of a one-tile benchmark project of ``size_px`` pixels."""
    seasons = {}
    for sid in (BEFORE, AFTER):
        start, end = season.dates(int(sid))
        seasons[sid] = {"start": start.isoformat(), "end": end.isoformat()}
    return {
        "project": f"bench{size_px}",
        "aoi": {"file": "aoi.geojson", "region_column": "region"},
        "grid": {"tile_size_px": size_px, "resolution_m": 10.0, "crs": "utm", "batch_size": 1},
        "seasons": seasons,
        "legends": _demo_legends(),
        "source": {
            "type": "synthetic",
            "seed": seed,
            "revisit_days": season.revisit_days,
            "missing_date_fraction": season.missing_date_fraction,
        },
        "storage": {"root": "data"},
        "stages": {
            # No cloud dilation: IS_VALID is then exactly IS_DATA & ~CLM, the valid mask of eo-learn's example.
            "download": {"cloud_dilation_px": 0},
            "features": {"temporal": "interpolate", "step_days": 10, "min_valid_coverage": 0.1},
            # One tile only: it must get reference (the demo default leaves 40 % of the tiles without).
            "add_reference": {
                "sources": [{"type": "synthetic_truth", "tile_fraction": 1.0, "parcel_fraction": 0.7, "seed": seed}]
            },
            "sampling": {"seed": seed},
            "merge_features": {"seed": seed},
            # Small tiles may hold a class with only a few samples: dropped (recorded) rather than failing.
            "training": {"seed": seed, "drop_rare_classes": True},
            # The before season is mapped with the after season's model (only its change map is needed).
            "prediction": {"model_season": AFTER},
        },
    }


def write_project(folder: Path, size_px: int, season: SeasonPlan, seed: int) -> Path:
    """Write ``aoi.geojson`` and ``project.yaml`` into ``folder``; returns the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_aoi(folder / "aoi.geojson", size_px, 10.0)
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(config_dict(size_px, season, seed), sort_keys=False), encoding="utf-8")
    return path
