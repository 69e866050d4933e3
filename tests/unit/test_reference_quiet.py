"""Reading vector files logs no GDAL noise: zipped Shapefiles open by their ``/vsizip/`` name, and GDAL's
GPKG file-extension warnings about eo-learn's extension-less in-memory files are dropped (and only those).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from lcms_tasks import gdal_logs
from lcms_tasks.reference.ingest import read_vector
from lcms_tasks.reference.sources import read_reference_file

EPSG = 32633


def _gdal_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("fiona") and r.levelno >= logging.INFO]


def _frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": ["1", "2"]},
        geometry=[box(500000, 5000000, 500050, 5000100), box(500050, 5000000, 500100, 5000100)],
        crs=EPSG,
    )


# Run in a fresh interpreter: GDAL reports the in-memory read warning once per process, so an
# earlier test's read would hide it. Prints the fiona warnings of one write and one read as JSON.
_PROBE = """
import io, json, logging, sys
records = []
class Keep(logging.Handler):
    def emit(self, record):
        if record.name.startswith("fiona") and record.levelno >= logging.WARNING:
            records.append(record.getMessage())
logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.WARNING)
if sys.argv[1] == "with":
    import lcms_tasks.reference  # installs the filter
import geopandas as gpd
from shapely.geometry import box
buffer = io.BytesIO()
gpd.GeoDataFrame({"code": ["1"]}, geometry=[box(0, 0, 1, 1)], crs=32633).to_file(buffer, driver="GPKG", layer="p")
frame = gpd.read_file(io.BytesIO(buffer.getvalue()))  # what eo-learn does with an EOPatch's vector features
assert len(frame) == 1
print(json.dumps(records))
"""


def _in_memory_warnings(with_reference_package: bool) -> list[str]:
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "with" if with_reference_package else "without"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    messages: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return messages


def test_in_memory_geopackages_warn_without_the_filter() -> None:
    # The noise this module is about exists: GDAL complains about the /vsimem/ name on write and read.
    messages = _in_memory_warnings(False)
    assert any("extension should be 'gpkg' instead of ''" in m for m in messages), messages
    assert any("/vsimem/" in m and "non conformant file extension" in m for m in messages), messages


def test_in_memory_geopackages_are_quiet_with_the_reference_package() -> None:
    assert _in_memory_warnings(True) == []


def test_the_filter_lets_every_other_gdal_warning_through() -> None:
    keep = [
        "CPLE_AppDefined:File /data/parcels.gpkg.bak has GPKG application_id, but non conformant file extension",
        "The filename extension should be 'gpkg' instead of 'tmp' to conform to the GPKG specification.",
        "CPLE_AppDefined:Ring Self-intersection at or near point 1 2",
    ]
    drop = [
        "CPLE_AppDefined:File /vsimem/0f3a has GPKG application_id, but non conformant file extension",
        "The filename extension should be 'gpkg' instead of '' to conform to the GPKG specification.",
    ]

    def passes(message: str) -> bool:
        record = logging.LogRecord("fiona._err", logging.WARNING, __file__, 1, message, None, None)
        return gdal_logs.InMemoryGpkgFilter().filter(record)

    assert [passes(m) for m in keep] == [True] * len(keep)
    assert [passes(m) for m in drop] == [False] * len(drop)


def test_zipped_shapefile_reads_quietly_in_ingest_and_in_the_stage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shp = tmp_path / "shp"
    shp.mkdir()
    _frame().to_file(shp / "parcels.shp")
    archive = tmp_path / "parcels.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in shp.iterdir():
            zf.write(p, p.name)
    with caplog.at_level(logging.INFO):
        assert len(read_vector(archive)) == 2
        window = read_reference_file(archive, None, "code", (500000.0, 5000000.0, 500100.0, 5000100.0), "EPSG:32633")
    assert sorted(window["code"]) == ["1", "2"]
    assert _gdal_records(caplog) == []
