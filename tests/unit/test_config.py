"""Config validation: good configs load, bad ones fail naming the file and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lcms_tasks.cli import main
from lcms_tasks.config import load_config, parse_config
from lcms_tasks.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp: Path, cfg: dict, name: str = "bad.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_demo_config_is_valid() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.project == "demo"
    assert cfg.season_ids_ordered() == ["2023", "2024"]
    assert cfg.default_season() == "2024"
    assert [c.name for c in cfg.legend()][:2] == ["cropland", "forest"]
    assert cfg.storage_root.startswith("file:///")


def test_relative_paths_resolve_against_config_folder(config_path: Path) -> None:
    cfg = load_config(config_path)
    assert cfg.resolve_path("aoi.geojson") == config_path.parent / "aoi.geojson"
    assert cfg.storage_root == f"file://{config_path.parent / 'data'}"


def test_env_interpolation(config_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = config_path.read_text().replace("root: data", "root: ${MY_ROOT:-fallback}")
    config_path.write_text(text)
    assert load_config(config_path).storage_root.endswith("/fallback")
    monkeypatch.setenv("MY_ROOT", "s3://bucket/prefix")
    assert load_config(config_path).storage_root == "s3://bucket/prefix"


def test_unset_env_without_default_is_an_error(config_path: Path) -> None:
    config_path.write_text(config_path.read_text().replace("root: data", "root: ${LCMS_SURELY_UNSET_VAR}"))
    with pytest.raises(ConfigError, match="LCMS_SURELY_UNSET_VAR"):
        load_config(config_path)


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda c: c.update(colour="red"), "colour", "unknown key"),
        (lambda c: c["grid"].update(tile_px=5), "grid.tile_px", "unknown key"),
        (lambda c: c["grid"].update(tile_size_px=2), "grid.tile_size_px", "greater than or equal"),
        (lambda c: c["seasons"]["2023"].update(end="2023-01-01"), "seasons.2023", "must be after its start"),
        (lambda c: c["legends"]["land_cover"].append({"id": 1, "name": "dup"}), "legends.land_cover", "repeats"),
        (lambda c: c["legends"]["land_cover"][0].update(color="blue"), "legends.land_cover.0.color", "pattern"),
        (lambda c: c["source"].update(type="landsat"), "source", "synthetic"),
        (lambda c: c["stages"].update(features={"temporal": "spline"}), "stages.features.temporal", "interpolate"),
        (lambda c: c.pop("seasons"), "seasons", "Field required"),
    ],
)
def test_bad_configs_name_file_and_field(config_path: Path, mutate, field: str, problem: str) -> None:
    cfg = yaml.safe_load(config_path.read_text())
    cfg.setdefault("stages", {})
    mutate(cfg)
    bad = _write(config_path.parent, cfg)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert str(bad) in msg
    assert field in msg
    assert problem in msg


def test_missing_aoi_file(config_path: Path) -> None:
    cfg = yaml.safe_load(config_path.read_text())
    cfg["aoi"]["file"] = "nowhere.gpkg"
    bad = _write(config_path.parent, cfg)
    with pytest.raises(ConfigError, match=r"aoi\.file.*nowhere\.gpkg does not exist"):
        load_config(bad)


def test_aoi_without_crs(config_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    d = config_path.parent
    gpd.GeoDataFrame({"a": [1]}, geometry=[box(0, 0, 1, 1)]).to_file(d / "nocrs.shp")
    (d / "nocrs.prj").unlink(missing_ok=True)
    cfg = yaml.safe_load(config_path.read_text())
    cfg["aoi"] = {"file": "nocrs.shp"}
    with pytest.raises(ConfigError, match=r"aoi\.file.*has no CRS"):
        load_config(_write(d, cfg))


def test_inline_geojson_needs_crs(config_path: Path) -> None:
    cfg = yaml.safe_load(config_path.read_text())
    cfg["aoi"] = {"geojson": {"type": "Polygon", "coordinates": [[[47, 39], [47.1, 39], [47.1, 39.1], [47, 39]]]}}
    with pytest.raises(ConfigError, match=r"aoi.*needs `crs`"):
        load_config(_write(config_path.parent, cfg))


def test_empty_aoi(config_path: Path) -> None:
    d = config_path.parent
    (d / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    cfg = yaml.safe_load(config_path.read_text())
    cfg["aoi"] = {"file": "empty.geojson"}
    with pytest.raises(ConfigError, match=r"aoi\.file.*no polygon"):
        load_config(_write(d, cfg))


def test_unknown_season_names_known_ones(config_path: Path) -> None:
    cfg = load_config(config_path)
    with pytest.raises(ConfigError, match="2023, 2024"):
        cfg.season("1999")


def test_config_is_frozen(config_path: Path) -> None:
    cfg = load_config(config_path)
    with pytest.raises(ValueError, match="frozen"):
        cfg.project = "other"  # type: ignore[misc]


def test_parse_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["a"], path="x.yaml")  # type: ignore[arg-type]


def test_cli_validate_exit_codes(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(config_path)]) == 0
    assert "valid" in capsys.readouterr().out
    cfg = yaml.safe_load(config_path.read_text())
    cfg["grid"]["bogus"] = 1
    bad = _write(config_path.parent, cfg)
    assert main(["config", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "grid.bogus" in err and str(bad) in err


def test_bad_config_writes_nothing(config_path: Path) -> None:
    cfg = yaml.safe_load(config_path.read_text())
    cfg["seasons"]["2023"]["end"] = "2020-01-01"
    bad = _write(config_path.parent, cfg)
    assert main(["run", "download", "--config", str(bad)]) == 2
    assert not (config_path.parent / "data").exists()


def test_template_validates_and_documents_every_section(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lcms_tasks.cli", "config", "template"], capture_output=True, text=True, check=True
    ).stdout
    for key in (
        "project:",
        "aoi:",
        "grid:",
        "seasons:",
        "legends:",
        "source:",
        "storage:",
        "stages:",
        "download:",
        "features:",
        "# Tile side in pixels.",
    ):
        assert key in out
    path = tmp_path / "template.yaml"
    path.write_text(out)
    cfg = load_config(path)
    assert cfg.stages.features.step_days == 10


def test_crop_only_project_needs_no_land_cover_legend(config_path: Path) -> None:
    cfg = yaml.safe_load(config_path.read_text())
    crop = cfg["legends"]["crop_type"]
    cfg["legends"] = {"crop_type": crop}
    cfg["classification"] = {"legend": "crop_type"}
    loaded = load_config(_write(config_path.parent, cfg))
    assert [c.name for c in loaded.legend()] == [c["name"] for c in crop]
    assert loaded.legends.land_cover == []
    # The legend the classifier predicts must exist, whichever it is.
    cfg["classification"] = {"legend": "land_cover"}
    with pytest.raises(ConfigError, match=r"legends\.land_cover needs at least 2 classes \(it has 0\)"):
        load_config(_write(config_path.parent, cfg))
