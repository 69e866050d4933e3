"""The map endpoints on small published projects with known arrays (no database: the viewer is given).

Rendered tiles are decoded and compared pixel by pixel with the COGs' values at each pixel's centre:
legend colours for CLASS, transition colours for CHANGE, the ramp for CONFIDENCE, the rescaled bands
in true and false colour order for imagery; a web tile over two project tiles (and over two UTM zones)
holds both. The pixel endpoint answers the arrays' values; unknown names are 404s naming them.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pyproj import Transformer
from shapely.geometry import box

from lcms_service.app import create_app
from lcms_service.auth import User, current_user
from lcms_service.maps_testing import LEGEND, SyntheticProject, make_project, utm_block
from lcms_service.settings import ServiceSettings
from lcms_service.tiles import RENDER_RANGES, confidence_table, hex_rgba
from lcms_tasks.bands import S2_BANDS
from lcms_tasks.grid import Tile
from lcms_tasks.publish.imagery import IMAGERY_BANDS

TMS = morecantile.tms.get("WebMercatorQuad")
DOWN = "postgresql://lcms:x@127.0.0.1:1/lcms"  # no database: these endpoints need none


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> SyntheticProject:
    """2 x 2 tiles of 64 px at 20 m in UTM 38N, seasons 2023 and 2024, with imagery and features."""
    return make_project(
        tmp_path_factory.mktemp("maps-api"), aoi=utm_block(32638, 498, 3440, 2, 2, 1280.0), aoi_crs=32638
    )


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> SyntheticProject:
    """A project across the UTM zones 38 and 39 (lon 48 E), one season, no imagery."""
    return make_project(
        tmp_path_factory.mktemp("maps-zones"),
        aoi=box(47.99, 40.0, 48.01, 40.012),
        aoi_crs=4326,
        seasons=("2024",),
        imagery=False,
        features=False,
        seed=5,
    )


def viewer_app(config: Path) -> Any:
    app = create_app(ServiceSettings(config=config, database_url=DOWN, require_database=False, freeze_gc=False))
    app.dependency_overrides[current_user] = lambda: User(name="viewer", role="viewer")
    return app


@pytest.fixture(scope="module")
def client(project: SyntheticProject) -> Iterator[TestClient]:
    yield TestClient(viewer_app(project.config_path))


@pytest.fixture(scope="module")
def zones_client(zones: SyntheticProject) -> Iterator[TestClient]:
    yield TestClient(viewer_app(zones.config_path))


# -- expected images ---------------------------------------------------------------------------------


def pixel_centres(z: int, x: int, y: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:3857 coordinates of the centres of a web tile's pixels, (size, size) each."""
    b = TMS.xy_bounds(morecantile.Tile(x, y, z))
    res = (b.right - b.left) / size
    cols = b.left + (np.arange(size) + 0.5) * res
    rows = b.top - (np.arange(size) + 0.5) * res
    return np.meshgrid(cols, rows)


def sample(
    tiles: list[Tile], arrays: dict[str, np.ndarray], nodata: int, z: int, x: int, y: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values (256, 256, ...), found (256, 256), tile index) at each pixel centre, from the first tile with data.

    Tiles are tried in tile id order, as the mosaic reads them.
    """
    mx, my = pixel_centres(z, x, y)
    first = next(iter(arrays.values()))
    values = np.zeros((*mx.shape, *first.shape[2:]), dtype=first.dtype)
    found = np.zeros(mx.shape, dtype=bool)
    which = np.full(mx.shape, -1)
    for k, tile in sorted(enumerate(tiles), key=lambda kt: kt[1].id):
        tx, ty = Transformer.from_crs(3857, tile.epsg, always_xy=True).transform(mx, my)
        min_x, _, _, max_y = tile.bounds
        col = np.floor((tx - min_x) / tile.resolution).astype(int)
        row = np.floor((max_y - ty) / tile.resolution).astype(int)
        inside = (col >= 0) & (col < tile.size_px) & (row >= 0) & (row < tile.size_px) & ~found
        v = arrays[tile.id][row.clip(0, tile.size_px - 1), col.clip(0, tile.size_px - 1)]
        has = v != nodata if v.ndim == 2 else (v != nodata).any(axis=-1)
        take = inside & has
        values[take] = v[take]
        found |= take
        which[take] = k
    return values, found, which


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.size == (256, 256)
    return np.asarray(image.convert("RGBA"))


def assert_colours(rgba: np.ndarray, values: np.ndarray, found: np.ndarray, table: dict[int, tuple[int, ...]]) -> None:
    """Every pixel has the colour of its value (transparent where no data); a handful on edges may differ."""
    expected = np.zeros((*values.shape, 4), dtype=np.uint8)
    for value, color in table.items():
        expected[found & (values == value)] = color
    same = (rgba == expected).all(axis=-1) | ((rgba[..., 3] == 0) & (expected[..., 3] == 0))
    assert same.mean() >= 0.998, f"{(~same).sum()} of {same.size} pixels differ"


def legend_table() -> dict[int, tuple[int, ...]]:
    return {c["id"]: hex_rgba(c["color"]) for c in LEGEND}


def tile_across(tiles: list[Tile], z: int) -> morecantile.Tile:
    """A web tile at zoom ``z`` on the corner shared by the project's tiles (so it meets several)."""
    lons, lats = [], []
    for t in tiles:
        lon, lat = Transformer.from_crs(t.epsg, 4326, always_xy=True).transform(t.bounds[2], t.bounds[3])
        lons.append(lon)
        lats.append(lat)
    # the top-right corner of the first tile is shared by its neighbours
    return TMS.tile(lons[0], lats[0], z)


# -- /api/projects ------------------------------------------------------------------------------------


def test_projects_describe_products_seasons_bounds_and_transitions(
    client: TestClient, project: SyntheticProject
) -> None:
    response = client.get("/api/projects")
    assert response.status_code == 200
    (p,) = response.json()
    assert p["project"] == "maptest"
    assert p["products"] == [
        {
            "id": "land_cover",
            "legend": [{k: c[k] for k in ("id", "name", "color")} for c in LEGEND],
            "primary": True,
            "bands": ["CLASS", "CONFIDENCE", "CHANGE"],
            "published_seasons": ["2023", "2024"],
        }
    ]
    assert p["seasons"] == [
        {"id": "2023", "start": "2023-04-01", "end": "2023-09-30", "published": True, "imagery": True},
        {"id": "2024", "start": "2024-04-01", "end": "2024-09-30", "published": True, "imagery": True},
    ]
    west, south, east, north = p["bounds"]
    assert 46.5 < west < east < 46.7 and 39.7 < south < north < 39.8
    marker = project.context("2024").storage.read_marker(
        project.context("2024").tile_uri("publish", project.tiles[0].id)
    )
    colors = {c["id"]: c["color"] for c in LEGEND}
    assert p["transitions"] == [{**c, "color": colors[c["to"]]} for c in marker["transition_codes"]]
    assert p["transitions"] and set(p["transitions"][0]) == {"code", "from", "to", "from_name", "to_name", "color"}


def test_projects_is_empty_without_a_config() -> None:
    app = create_app(ServiceSettings(database_url=DOWN, require_database=False, freeze_gc=False))
    app.dependency_overrides[current_user] = lambda: User(name="viewer", role="viewer")
    assert TestClient(app).get("/api/projects").json() == []
    response = TestClient(app).get("/api/imagery/2024/dates")
    assert response.status_code == 404 and "LCMS_CONFIG" in response.json()["detail"]


def test_a_broken_config_is_503(tmp_path: Path) -> None:
    (tmp_path / "project.yaml").write_text("project: [not, a, name]\n")
    response = TestClient(viewer_app(tmp_path / "project.yaml")).get("/api/imagery/2024/dates")
    assert response.status_code == 503 and "project config cannot be used" in response.json()["detail"]


# -- map tiles ---------------------------------------------------------------------------------------


def test_class_tile_has_the_legend_colours_and_mosaics_two_tiles(client: TestClient, project: SyntheticProject) -> None:
    t = tile_across(project.tiles, 16)
    response = client.get(f"/api/maps/2024/CLASS/tiles/{t.z}/{t.x}/{t.y}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, max-age=60"
    arrays = {tile.id: project.classes[("2024", tile.id)] for tile in project.tiles}
    values, found, which = sample(project.tiles, arrays, 0, t.z, t.x, t.y)
    assert len(set(which[found].tolist())) >= 2  # the web tile meets several project tiles
    rgba = decode(response.content)
    assert_colours(rgba, values, found, legend_table())
    assert (rgba[..., 3] == 0).any() and (rgba[..., 3] == 255).any()  # the no-data strip is transparent


def test_change_and_confidence_tiles(client: TestClient, project: SyntheticProject) -> None:
    t = tile_across(project.tiles, 16)
    marker = project.context("2023").storage.read_marker(
        project.context("2023").tile_uri("publish", project.tiles[0].id)
    )
    colors = {c["id"]: hex_rgba(c["color"]) for c in LEGEND}
    change_table = {c["code"]: colors[c["to"]] for c in marker["transition_codes"]}
    arrays = {tile.id: project.change[("2023", tile.id)] for tile in project.tiles}
    values, found, _ = sample(project.tiles, arrays, 0, t.z, t.x, t.y)
    assert found.any()  # some changes there
    rgba = decode(client.get(f"/api/maps/2023/CHANGE/tiles/{t.z}/{t.x}/{t.y}.png").content)
    assert_colours(rgba, values, found, change_table)
    assert (rgba[..., 3] == 0).any()  # no change: transparent

    arrays = {tile.id: project.confidence[("2023", tile.id)] for tile in project.tiles}
    values, found, _ = sample(project.tiles, arrays, 255, t.z, t.x, t.y)
    rgba = decode(client.get(f"/api/maps/2023/CONFIDENCE/tiles/{t.z}/{t.x}/{t.y}.png").content)
    assert_colours(rgba, values, found, {k: v for k, v in confidence_table().items() if k <= 100})
    assert confidence_table()[0] == (0, 0, 0, 255) and confidence_table()[100] == (255, 255, 255, 255)


def test_tile_across_two_utm_zones_mosaics_both(zones_client: TestClient, zones: SyntheticProject) -> None:
    assert {t.epsg for t in zones.tiles} == {32638, 32639}
    t = TMS.tile(48.0, 40.006, 15)
    response = zones_client.get(f"/api/maps/2024/CLASS/tiles/{t.z}/{t.x}/{t.y}.png")
    assert response.status_code == 200
    arrays = {tile.id: zones.classes[("2024", tile.id)] for tile in zones.tiles}
    values, found, which = sample(zones.tiles, arrays, 0, t.z, t.x, t.y)
    assert {zones.tiles[k].epsg for k in set(which[found].tolist())} == {32638, 32639}
    assert_colours(decode(response.content), values, found, legend_table())


def test_tiles_outside_the_data_are_204(client: TestClient, project: SyntheticProject) -> None:
    for path in (
        "/api/maps/2024/CLASS/tiles/10/0/0.png",
        "/api/maps/2024/CHANGE/tiles/16/0/0.png",
        "/api/imagery/2024/tiles/12/5/5.png",
        "/api/imagery/2024/tiles/12/5/5.png?date=2024-04-08&render=false_color",
    ):
        response = client.get(path)
        assert response.status_code == 204 and response.content == b"", path
    # a tile meeting the footprints' bounding boxes but no raster is 204 too; the whole world is a PNG
    assert client.get("/api/maps/2024/CLASS/tiles/0/0/0.png").status_code == 200


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/api/maps/2030/CLASS/tiles/16/1/1.png", "'2030'"),
        ("/api/maps/2024/NDVI/tiles/16/1/1.png", "'NDVI'"),
        ("/api/maps/2024/class/tiles/16/1/1.png", "'class'"),
        ("/api/maps/2024/CLASS/tiles/3/8/1.png", "3/8/1"),
        ("/api/imagery/2030/tiles/16/1/1.png", "'2030'"),
        ("/api/imagery/2024/tiles/16/1/1.png?date=2024-04-02", "'2024-04-02'"),
        ("/api/imagery/2024/tiles/16/1/1.png?date=yesterday", "'yesterday'"),
        ("/api/imagery/2030/dates", "'2030'"),
        ("/api/pixel?lon=46.61&lat=39.77&seasons=2024,2030", "'2030'"),
        ("/api/pixel?lon=10&lat=10", "outside every tile"),
    ],
)
def test_unknown_names_are_404s_naming_them(client: TestClient, path: str, named: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert named in response.json()["detail"]
    assert response.headers["cache-control"] == "no-store"


def test_unpublished_season_is_404(project: SyntheticProject, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(project.config_path.parent, folder)
    shutil.rmtree(folder / "data" / "maptest" / "2023" / "publish")
    shutil.rmtree(folder / "data" / "maptest" / "2023" / "imagery")
    client = TestClient(viewer_app(folder / "project.yaml"))
    seasons = {s["id"]: s for s in client.get("/api/projects").json()[0]["seasons"]}
    assert not seasons["2023"]["published"] and not seasons["2023"]["imagery"] and seasons["2024"]["published"]
    response = client.get("/api/maps/2023/CLASS/tiles/16/1/1.png")
    assert response.status_code == 404 and "not published" in response.json()["detail"]
    assert client.get("/api/imagery/2023/dates").json() == []
    assert client.get("/api/imagery/2023/tiles/16/1/1.png").status_code == 404


def test_a_republished_season_is_seen_at_once(project: SyntheticProject, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(project.config_path.parent, folder)
    client = TestClient(viewer_app(folder / "project.yaml"))
    t = tile_across(project.tiles, 16)
    url = f"/api/maps/2024/CLASS/tiles/{t.z}/{t.x}/{t.y}.png"
    assert client.get(url).status_code == 200
    publish = folder / "data" / "maptest" / "2024" / "publish"
    for child in publish.iterdir():
        shutil.rmtree(child)  # every tile folder gone: the season folder's mtime changes
    assert client.get(url).status_code == 404


# -- imagery -----------------------------------------------------------------------------------------


def _rescaled(values: np.ndarray, ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
    out = np.zeros(values.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(ranges):
        out[..., i] = np.floor((np.clip(values[..., i].astype(np.float64), lo, hi) - lo) / (hi - lo) * 255)
    return out


@pytest.mark.parametrize("render", ["true_color", "false_color"])
def test_imagery_band_order_and_rescale(client: TestClient, project: SyntheticProject, render: str) -> None:
    import rasterio

    ctx = project.context("2024")
    order = {"true_color": ("B04", "B03", "B02"), "false_color": ("B08", "B04", "B03")}[render]
    arrays = {}
    for tile in project.tiles:
        with rasterio.open(ctx.storage.local_path(ctx.tile_uri("imagery", tile.id)) / "composite.tiff") as src:
            composite = np.moveaxis(src.read(), 0, -1)
        arrays[tile.id] = composite[..., [IMAGERY_BANDS.index(b) for b in order]]
    t = tile_across(project.tiles, 16)
    response = client.get(f"/api/imagery/2024/tiles/{t.z}/{t.x}/{t.y}.png", params={"render": render})
    assert response.status_code == 200
    rgba = decode(response.content)
    values, found, which = sample(project.tiles, arrays, 0, t.z, t.x, t.y)
    assert len(set(which[found].tolist())) >= 2
    expected = _rescaled(values, RENDER_RANGES[render])
    close = (np.abs(rgba[..., :3].astype(int) - expected.astype(int)) <= 1).all(axis=-1)
    assert close[found].mean() >= 0.998
    assert (rgba[..., 3][found] == 255).mean() >= 0.998 and (rgba[..., 3][~found] == 0).mean() >= 0.998


def test_imagery_of_one_date(client: TestClient, project: SyntheticProject) -> None:
    dates = client.get("/api/imagery/2024/dates").json()
    assert dates == ["2024-04-01", "2024-04-08", "2024-04-15"]
    stamps = project.timestamps["2024"]
    i = next(k for k, s in enumerate(stamps) if s.date().isoformat() == "2024-04-15")
    picks = [S2_BANDS.index(b) for b in ("B04", "B03", "B02")]
    arrays = {
        tile.id: np.where(
            project.data[("2024", tile.id)][i][..., None],
            np.maximum(project.bands[("2024", tile.id)][i][..., picks], 1),
            0,
        ).astype(np.uint16)
        for tile in project.tiles
    }
    t = tile_across(project.tiles, 16)
    response = client.get(f"/api/imagery/2024/tiles/{t.z}/{t.x}/{t.y}.png", params={"date": "2024-04-15"})
    assert response.status_code == 200
    values, found, _ = sample(project.tiles, arrays, 0, t.z, t.x, t.y)
    expected = _rescaled(values, RENDER_RANGES["true_color"])
    rgba = decode(response.content)
    close = (np.abs(rgba[..., :3].astype(int) - expected.astype(int)) <= 1).all(axis=-1)
    assert close[found].mean() >= 0.998


# -- /api/pixel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tile_index", "row", "col"), [(0, 10, 20), (3, 63, 63), (1, 0, 0)])
def test_pixel_answers_the_arrays(
    client: TestClient, project: SyntheticProject, tile_index: int, row: int, col: int
) -> None:
    tile = project.tiles[tile_index]
    min_x, _, _, max_y = tile.bounds
    x, y = min_x + (col + 0.5) * tile.resolution, max_y - (row + 0.5) * tile.resolution
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(x, y)
    response = client.get("/api/pixel", params={"lon": lon, "lat": lat, "seasons": "2024,2023"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tile"] == tile.id and list(body["seasons"]) == ["2024", "2023"]
    names = {c["id"]: c["name"] for c in LEGEND}
    for season in ("2023", "2024"):
        klass = int(project.classes[(season, tile.id)][row, col])
        pct = int(project.confidence[(season, tile.id)][row, col])
        got = body["seasons"][season]
        if klass == 0:
            assert got == {"class": None, "class_name": None, "confidence": None, "published": True}
        else:
            assert got == {"class": klass, "class_name": names[klass], "confidence": pct / 100, "published": True}
        ndvi = project.ndvi[(season, tile.id)][:, row, col]
        expected = [
            {"date": d.isoformat(), "ndvi": None if np.isnan(v) else round(float(v), 4)}
            for d, v in zip(project.feature_dates[season], ndvi, strict=True)
        ]
        assert body["ndvi"][season] == expected
    default = client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()
    assert list(default["seasons"]) == ["2023", "2024"]  # every season, in time order


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/api/projects",
        "/api/maps/{season}/{band}/tiles/{z}/{x}/{y}.png",
        "/api/imagery/{season}/dates",
        "/api/imagery/{season}/tiles/{z}/{x}/{y}.png",
        "/api/pixel",
    ):
        assert "get" in paths[path], path
        assert {"401", "404"} <= set(paths[path]["get"]["responses"]) or path == "/api/projects"
    tile = paths["/api/maps/{season}/{band}/tiles/{z}/{x}/{y}.png"]["get"]["responses"]
    assert "image/png" in tile["200"]["content"] and "204" in tile
