"""Reference rasterisation on real data (../shared/data, see its README).

* Slovenia LULC: the polygons of ``vector_timeless/LULC.gpkg`` burned on the EOPatch's grid
  must reproduce the patch's own ``mask_timeless/LULC``, also when the polygons come in EPSG:4326.
* Slovenia EuroCrops/GERK parcels (Shapefile, EPSG:3794, string codes with leading zeros)
  over several UTM tiles: crosswalked, unknown codes counted, areas preserved.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from lcms_tasks.reference.rasterize import rasterize_reference, samplable_mask
from lcms_tasks.reference.sources import file_polygons, read_reference_file

if TYPE_CHECKING:
    from eolearn.core import EOPatch

pytestmark = pytest.mark.realdata

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SLOVENIA = DATA_DIR / "slovenia_2015_s2l1c_5dates"
GERK = DATA_DIR / "lpis_samples" / "slovenia_eurocrops_2021" / "SI_2021_EC21.shp"
LULC_IDS = {1, 2, 3, 4, 8}  # README: 0 no data, 1 cultivated, 2 forest, 3 grassland, 4 shrubland, 8 artificial


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real data {path} is absent (expected next to the repository as shared/data)")


@pytest.fixture(scope="module")
def slovenia() -> EOPatch:
    _need(SLOVENIA)
    from eolearn.core import EOPatch, FeatureType

    # Only what the tests compare with (the LULC mask and the bbox): eo-learn would read the vector
    # features through extension-less in-memory GeoPackages, which GDAL warns about.
    return EOPatch.load(str(SLOVENIA), features=[(FeatureType.MASK_TIMELESS, "LULC")])


def _rasterize_file(
    path: Path, patch: EOPatch, layer: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from rasterio.transform import from_bounds

    expected = patch.mask_timeless["LULC"][..., 0]
    h, w = expected.shape
    b = patch.bbox
    assert b is not None
    bounds = (b.min_x, b.min_y, b.max_x, b.max_y)
    crs = f"EPSG:{b.crs.epsg}"
    frame = read_reference_file(path, layer, "LULC_ID", bounds, crs)
    polygons, stats = file_polygons(
        frame, "LULC_ID", None, LULC_IDS, source_name="lulc", bounds=bounds, tile_crs=crs, priority=0, min_area_m2=0
    )
    ref = rasterize_reference(polygons, (h, w), from_bounds(*bounds, w, h), "priority")
    return ref.labels, ref.polygon_index, stats.to_dict()


def test_slovenia_lulc_polygons_reproduce_the_patch_mask(
    slovenia: EOPatch, record_property: Callable[[str, object], None]
) -> None:
    assert slovenia.bbox is not None and slovenia.bbox.crs.epsg == 32633
    expected = slovenia.mask_timeless["LULC"][..., 0]
    assert expected.shape == (101, 100)
    labels, index, stats = _rasterize_file(SLOVENIA / "vector_timeless" / "LULC.gpkg", slovenia)
    agreement = float((labels == expected).mean())
    print(f"\nSlovenia LULC rasterisation agreement with mask_timeless/LULC: {agreement:.4%}")
    record_property("slovenia_lulc_agreement", agreement)
    assert agreement >= 0.95
    # Every class of the mask is reproduced, code 0 ('no data') is a deliberate no-label code.
    assert set(np.unique(labels)) == set(np.unique(expected))
    assert stats["unknown_codes"] == {} and stats["unlabelled_codes"].get("0", 0) >= 1
    assert ((labels > 0) == (index > 0)).all()
    samplable = samplable_mask(labels, index, erosion_px=1)
    assert samplable.sum() < (labels > 0).sum() and (labels[samplable] > 0).all()


def test_slovenia_lulc_in_wgs84_gives_the_same_raster(slovenia: EOPatch, tmp_path: Path) -> None:
    import geopandas as gpd

    native, _, _ = _rasterize_file(SLOVENIA / "vector_timeless" / "LULC.gpkg", slovenia)
    frame = gpd.read_file(SLOVENIA / "vector_timeless" / "LULC.gpkg")
    wgs = tmp_path / "lulc_wgs84.gpkg"
    frame.to_crs(4326).to_file(wgs)
    reprojected, _, _ = _rasterize_file(wgs, slovenia)
    same = float((reprojected == native).mean())
    print(f"\nSlovenia LULC from EPSG:4326 vs native CRS: {same:.4%} identical pixels")
    assert same >= 0.995
    assert float((reprojected == slovenia.mask_timeless["LULC"][..., 0]).mean()) >= 0.95


def test_gerk_parcels_over_utm_tiles_are_crosswalked_and_counted() -> None:
    _need(GERK)
    import geopandas as gpd

    from lcms_tasks.grid import Tile

    parcels = gpd.read_file(GERK).to_crs(32633)
    min_x, min_y, max_x, max_y = parcels.total_bounds
    size, res = 250, 20.0  # 5 km tiles
    side = size * res
    tiles = [
        Tile(32633, row, col, size, res)
        for row in range(int(min_y // side), int(max_y // side) + 1)
        for col in range(int(min_x // side), int(max_x // side) + 1)
    ]
    # Permanent grassland (204) and maize (005, a string code with a leading zero); the rest is unknown.
    crosswalk = {"204": 1, "005": 2}
    mapped_area = float(parcels[parcels["SIFRA_KMRS"].isin(["204", "005"])].area.sum())
    burned_area = 0.0
    unknown: dict[str, int] = {}
    read = 0
    for tile in tiles:
        frame = read_reference_file(GERK, None, "SIFRA_KMRS", tile.bounds, tile.crs)
        polygons, stats = file_polygons(
            frame,
            "SIFRA_KMRS",
            crosswalk,
            {1, 2},
            source_name="gerk",
            bounds=tile.bounds,
            tile_crs=tile.crs,
            priority=0,
            min_area_m2=0,
        )
        read += stats.polygons_read
        for code, n in stats.unknown_codes.items():
            unknown[code] = unknown.get(code, 0) + n
        ref = rasterize_reference(polygons, tile.shape, tile.transform())
        burned_area += float((ref.labels > 0).sum()) * res * res
    assert read >= len(parcels)  # parcels crossing a tile edge are read by both tiles
    assert unknown.get("006", 0) >= 11 and "204" not in unknown and "005" not in unknown
    assert sum(unknown.values()) >= int((~parcels["SIFRA_KMRS"].isin(["204", "005"])).sum())
    # Rasterised area matches the polygons' area (pixel-centre rule: no systematic bias).
    assert burned_area == pytest.approx(mapped_area, rel=0.1)
