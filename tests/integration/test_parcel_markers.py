"""`lcms parcels markers` on a small synthetic project processed for real (download and features).

4 x 4 tiles of 64 px (the conftest project's tiles, more of them: 2 x 2 tiles hold only ~20 crop fields,
too few to train and hold out five crops). Declarations are the synthetic source's crop fields, then the
same fields read back from a GeoPackage with one extra parcel across a tile border.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
import yaml
from shapely.geometry import box

from lcms_tasks.cli import main
from tests.chain_helpers import run_chain

SEASON = "2023"
RUN = Path("data/testproj/2023/parcel_markers/_run")
ARGS = ["--block-m", "640", "--min-class-count", "3", "--threads", "2"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("parcel-markers")
    write_aoi(folder / "aoi.geojson", ncols=4, nrows=4)
    cfg = base_config("aoi.geojson", "data", batch_size=16)
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_chain(path, SEASON, ("download", "features"), "chain")
    return path


def _markers(project: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["parcels", "markers", "--config", str(project), "--season", SEASON, *ARGS, *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary: dict[str, Any] = json.loads(out.out)
    return summary


def _truth(project: Path) -> gpd.GeoDataFrame:
    from lcms_tasks import eopatch
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext

    ctx = RunContext.create(load_config(project), season=SEASON, run_id="t")
    frames = []
    for tile in ctx.tiles():
        patch, _ = eopatch.load(
            ctx.storage, ctx.tile_uri("download", tile.id), features=["vector_timeless/TRUTH_PARCELS"]
        )
        frames.append(patch.vector_timeless["TRUTH_PARCELS"])
    truth = pd.concat(frames, ignore_index=True)
    return truth[truth["crop_type"] > 0]


def test_synthetic_declarations_give_every_output_and_beat_the_majority_class(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = _markers(project, capsys)
    run = project.parent / RUN
    parcels = gpd.read_parquet(run / "parcels.parquet")
    gpkg = gpd.read_file(run / "parcels.gpkg", layer="parcels")
    flagged = pd.read_csv(run / "disagreements.csv")
    assert json.loads((run / "summary.json").read_text())["held_out"] == summary["held_out"]
    truth = _truth(project)
    expected = sorted(f"{t}:{p}" for t, p in zip(truth["tile"], truth["parcel_id"], strict=True))
    # every declared parcel exactly once, in both files
    assert sorted(parcels["parcel_id"]) == expected and sorted(gpkg["parcel_id"]) == expected
    assert set(parcels["status"]) == {"ok", "too_small"}
    small = parcels["status"] == "too_small"
    assert (parcels.loc[small, "n_pixels"] < 4).all() and (parcels.loc[~small, "n_pixels"] >= 4).all()
    assert parcels.loc[small, "predicted"].isna().all() and parcels.loc[~small, "predicted"].notna().all()
    assert summary["status_counts"] == {"ok": int((~small).sum()), "too_small": int(small.sum())}
    assert any(c.startswith("mean_NDVI_") for c in parcels.columns)
    # out-of-sample agreement, well above always answering the training parcels' most common crop
    held = summary["held_out"]
    assert held["n"] >= 15 and held["agreement"] >= held["majority_class_rate"] + 0.3, held
    # the disagreements table: exactly the flagged parcels, by decreasing probability
    assert sorted(flagged["parcel_id"]) == sorted(parcels.loc[parcels["disagreement"], "parcel_id"])
    assert flagged["probability"].is_monotonic_decreasing and (flagged["probability"] >= 0.8).all()
    assert sum(r["n"] for r in summary["agreement_per_crop"].values()) == summary["n_test"]
    # same seed, same output
    again = _markers(project, capsys)
    assert again["held_out"] == held
    pd.testing.assert_frame_equal(
        gpd.read_parquet(run / "parcels.parquet").drop(columns="geometry"), parcels.drop(columns="geometry")
    )


def test_declarations_from_a_file_with_a_parcel_across_a_tile_border(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    truth = _truth(project)
    names = {1: "winter cereal", 2: "maize", 3: "cotton", 4: "sunflower", 5: "vineyard", 6: "sugar beet"}
    decl = gpd.GeoDataFrame(
        {
            "pid": [f"{t}:{p}" for t, p in zip(truth["tile"], truth["parcel_id"], strict=True)],
            "crop": [names[int(c)] for c in truth["crop_type"]],
        },
        geometry=list(truth.geometry),
        crs=truth.crs,
    )
    # a parcel across the border x = 638720 between two tiles: 8 x 4 px of 20 m on each side
    across = box(638720 - 160, 4404480 + 300, 638720 + 160, 4404480 + 380)
    decl = pd.concat(
        [decl, gpd.GeoDataFrame({"pid": ["across"], "crop": ["maize"]}, geometry=[across], crs=truth.crs)],
        ignore_index=True,
    )
    path = tmp_path / "decl.gpkg"
    gpd.GeoDataFrame(decl, crs=truth.crs).to_file(path, driver="GPKG")
    summary = _markers(project, capsys, "--declarations", str(path), "--class-column", "crop", "--id-column", "pid")
    parcels = gpd.read_parquet(project.parent / RUN / "parcels.parquet")
    assert sorted(parcels["parcel_id"]) == sorted(decl["pid"])
    row = parcels.set_index("parcel_id").loc["across"]
    # 16 x 4 px, inner buffer 1 (not along the tile border): 14 x 2 clean pixels, from both tiles
    assert row["n_pixels"] == 28 and row["status"] == "ok"
    assert summary["n_parcels"] == len(decl)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--declarations", "nowhere.gpkg", "--class-column", "crop"], "nowhere.gpkg does not exist"),
        (["--declarations", "{file}", "--class-column", "nope"], "has no column 'nope'"),
        (["--declarations", "{file}", "--class-column", "crop"], "record 1"),
    ],
)
def test_bad_declarations_exit_2_naming_the_culprit(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], message: str
) -> None:
    file = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame(
        {"crop": ["maize", "rice"]}, geometry=[box(638000, 4404000, 638100, 4404100)] * 2, crs=32638
    ).to_file(file, driver="GPKG")
    args = [a.replace("{file}", str(file)) for a in extra]
    code = main(["parcels", "markers", "--config", str(project), "--season", SEASON, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_no_features_for_the_season_exits_2(project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    file = tmp_path / "ok.gpkg"
    gpd.GeoDataFrame({"crop": ["maize"]}, geometry=[box(638000, 4404000, 638100, 4404100)], crs=32638).to_file(file)
    code = main(
        [
            "parcels",
            "markers",
            "--config",
            str(project),
            "--season",
            "2024",
            "--declarations",
            str(file),
            "--class-column",
            "crop",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no features for season 2024" in err[0], err


def test_the_report_shows_the_parcel_agreement(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.report.html import _parcel_section
    from lcms_tasks.stages.reporting import _parcel_markers

    summary = _markers(project, capsys)
    block = _parcel_markers(RunContext.create(load_config(project), season=SEASON, run_id="r"))
    assert block is not None and block["held_out"] == summary["held_out"]
    html = "\n".join(_parcel_section(block))
    assert "<h2>Parcel agreement</h2>" in html and "declared \\ predicted" in html
    for crop, row in summary["agreement_per_crop"].items():
        assert f'<td class="l">{crop}</td><td class="">{row["n"]}</td>' in html
    assert _parcel_markers(RunContext.create(load_config(project), season="2024", run_id="r")) is None
    assert _parcel_section(None) == []
