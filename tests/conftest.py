"""Shared fixtures: tiny project configs, temporary storage roots, the real data folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings as _hypothesis_settings

# Property tests draw the same examples on every run (CI included): a failure is reproducible, never a fluke
# of one random draw. HYPOTHESIS_PROFILE=explore draws new examples, to look for more.
_hypothesis_settings.register_profile("lcms", derandomize=True, database=None)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lcms"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Airflow reads its configuration when first imported: point it at a private, throw-away home
# (SQLite metadata database) before any test module imports it, so tests never touch a developer's
# .airflow folder and never depend on each other's state.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="lcms-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)


def write_aoi(
    path: Path,
    *,
    epsg: int = 32638,
    col0: int = 498,
    row0: int = 3440,
    ncols: int = 2,
    nrows: int = 2,
    side: float = 1280.0,
    inset: float = 15.0,
) -> Path:
    """An AOI polygon (two regions) covering exactly ncols x nrows grid tiles of ``side`` metres."""
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = col0 * side, row0 * side
    mid = y0 + side * (nrows // 2 if nrows > 1 else 0.5)
    north = box(x0 + inset, mid, x0 + ncols * side - inset, y0 + nrows * side - inset)
    south = box(x0 + inset, y0 + inset, x0 + ncols * side - inset, mid)
    gpd.GeoDataFrame({"region": ["north", "south"]}, geometry=[north, south], crs=epsg).to_file(path, driver="GeoJSON")
    return path


def base_config(aoi_file: str, storage_root: str, *, tile_px: int = 64, batch_size: int = 2) -> dict[str, Any]:
    demo_text = (REPO / "configs" / "demo.yaml").read_text()
    demo = yaml.safe_load(demo_text.replace("${LCMS_STORAGE_ROOT:-../lcms-data}", "x"))
    return {
        "project": "testproj",
        "aoi": {"file": aoi_file, "region_column": "region"},
        "grid": {"tile_size_px": tile_px, "resolution_m": 10.0 * 128 / tile_px, "batch_size": batch_size},
        "seasons": {
            "2023": {"start": "2023-04-01", "end": "2023-09-30"},
            "2024": {"start": "2024-04-01", "end": "2024-09-30"},
        },
        "legends": demo["legends"],
        "source": {"type": "synthetic", "seed": 7},
        "storage": {"root": storage_root},
    }


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata database (SQLite) migrated once per test session."""
    import subprocess
    import sys

    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return _AIRFLOW_HOME


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A folder with a 2 x 2-tile AOI and a config (64 px tiles at 20 m) storing under ./data."""
    write_aoi(tmp_path / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    (tmp_path / "project.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path


@pytest.fixture
def config_path(project_dir: Path) -> Path:
    return project_dir / "project.yaml"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the repo as ../shared/data)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests choose their own storage roots; a developer's environment must not leak in.
    for var in ("LCMS_STORAGE_ROOT", "LCMS_CONFIG", "LCMS_TILE_RUNNER"):
        if var in os.environ:
            monkeypatch.delenv(var)
