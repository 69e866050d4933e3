"""A tile subset is a subset everywhere: per-tile stages, per-season stages, the CLI and the batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lcms_tasks.cli import main
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.runner import plan_batches, run_tiles, tiles_of_batch


@pytest.fixture
def subset_project(config_path: Path) -> tuple[Path, list[str], list[str]]:
    """The 2 x 2-tile project with its first two tiles processed up to sampling (season 2023)."""
    cfg = yaml.safe_load(config_path.read_text())
    # Every tile gets reference, so the two-tile subset has enough samples to train on.
    cfg["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
    }
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    loaded = load_config(config_path)
    ctx = RunContext.create(loaded, season="2023", run_id="subset")
    all_ids = [t.id for t in ctx.project_tiles()]
    chosen = all_ids[:2]
    sub = RunContext.create(loaded, season="2023", run_id="subset", subset=chosen)
    for stage in ("download", "features", "add_reference", "sampling"):
        run_tiles(stage, sub.tiles(), sub)
    return config_path, chosen, all_ids


def _run(config: Path, *argv: str) -> int:
    return main(["run", argv[0], "--config", str(config), "--season", "2023", *argv[1:]])


def test_per_season_stages_cover_the_tile_subset(
    subset_project: tuple[Path, list[str], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, chosen, all_ids = subset_project
    tiles = [arg for t in chosen for arg in ("--tile", t)]
    # Without the subset, merging demands every tile and says which are missing and how to make them.
    assert _run(config, "merge_features") == 2
    err = capsys.readouterr().err
    assert "2 of 4 tile(s)" in err and all_ids[2] in err and "lcms run sampling" in err and "--tile" in err

    assert _run(config, "merge_features", *tiles) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tile_subset"] == chosen and out["n_tiles"] == 2 and out["n_project_tiles"] == 4
    ctx = RunContext.create(load_config(config), season="2023")
    dataset_uri = ctx.run_uri("merge_features", "dataset")
    meta = ctx.storage.read_marker(dataset_uri)
    assert meta["tiles_used"] == chosen and meta["tile_subset"] == chosen
    with ctx.storage.reading_dir(dataset_uri) as folder, np.load(folder / "dataset.npz") as data:
        assert set(data["tile"].tolist()) == set(chosen)

    # A model trained on the subset says so; training "every tile" on a subset's dataset is refused.
    assert _run(config, "training") == 2
    assert "covers the tile subset" in capsys.readouterr().err
    assert _run(config, "training", *tiles) == 0
    capsys.readouterr()
    model_meta = ctx.storage.read_marker(ctx.run_uri("training", "model"))
    assert model_meta["tile_subset"] == chosen and model_meta["n_project_tiles"] == 4

    # Per-tile stages of the subset run on the subset only: other tiles stay untouched.
    assert _run(config, "prediction", *tiles) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["written"]) == sorted(chosen)
    assert ctx.storage.complete_children(ctx.stage_uri("prediction")) == set(chosen)


def test_batches_of_a_subset(config_path: Path) -> None:
    cfg = load_config(config_path)
    ids = [t.id for t in RunContext.create(cfg, season="2023").project_tiles()]
    ctx = RunContext.create(cfg, season="2023", subset=[ids[3], ids[1], ids[3]])
    assert [t.id for t in ctx.tiles()] == [ids[3], ids[1]]  # order kept, duplicates dropped
    batches = plan_batches(ctx)
    assert [b["tile_ids"] for b in batches] == [[ids[3], ids[1]]]  # batch_size 2
    assert [t.id for t in tiles_of_batch(ctx, batches[0]["id"])] == [ids[3], ids[1]]
    assert ctx.is_subset and ctx.coverage() == {
        "tile_subset": [ids[3], ids[1]],
        "n_tiles": 2,
        "n_project_tiles": 4,
        "excluded": {},
    }
    whole = RunContext.create(cfg, season="2023", subset=ids)
    assert not whole.is_subset and whole.coverage()["tile_subset"] is None
