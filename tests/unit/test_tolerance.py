"""Failed tiles: the tolerance per stage, the gaps a run hands on, and the re-run that fills them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lcms_airflow import runs
from lcms_tasks.cli import main
from lcms_tasks.config import FailuresConfig, Tolerance, load_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import ConfigError
from lcms_tasks.runner import run_stage, run_tiles
from lcms_tasks.tolerance import (
    TooManyFailedTilesError,
    assess,
    check_within_tolerance,
    finish_stage_run,
    rerun_spec,
    summary_uri,
)


def test_tolerance_is_the_larger_of_count_and_fraction() -> None:
    assert Tolerance().allowed(5000) == 0
    assert Tolerance(max_fraction=0.02).allowed(5000) == 100
    assert Tolerance(max_fraction=0.02).allowed(49) == 0  # floor: 0.98 tiles tolerate none
    assert Tolerance(max_fraction=0.02).allowed(50) == 1
    assert Tolerance(max_count=3, max_fraction=0.02).allowed(50) == 3


def test_training_inputs_tolerate_nothing_by_default_and_stages_override() -> None:
    failures = FailuresConfig.model_validate({"stages": {"sampling": {"max_count": 2}}})
    assert failures.for_stage("download") == (Tolerance(max_fraction=0.02), "failures.mapped")
    assert failures.for_stage("add_reference") == (Tolerance(), "failures.training_inputs")
    assert failures.for_stage("sampling") == (Tolerance(max_count=2), "failures.stages.sampling")
    with pytest.raises(ValueError, match="training: only per-tile stages have failed tiles"):
        FailuresConfig.model_validate({"stages": {"training": {"max_count": 1}}})


def _tolerating(config_path: Path, **failures: object) -> Path:
    data = yaml.safe_load(config_path.read_text())
    data["failures"] = failures
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return config_path


def _poison(ctx: RunContext, tile_id: str) -> Path:
    """Corrupt the tile's downloaded imagery: cut its band array short."""
    folder = ctx.storage.local_path(ctx.tile_uri("download", tile_id))
    bands = next(p for p in folder.rglob("*.npy*") if "BANDS" in p.name)
    data = bands.read_bytes()
    bands.write_bytes(data[: len(data) // 2])
    return bands


@pytest.fixture
def downloaded(config_path: Path) -> tuple[Path, str]:
    """The conftest project with season 2024 downloaded from the CLI, one tile's imagery corrupted."""
    assert main(["run", "download", "--config", str(config_path), "--season", "2024", "--run-id", "dl"]) == 0
    ctx = RunContext.create(load_config(config_path), season="2024")
    poisoned = ctx.tiles()[1].id
    _poison(ctx, poisoned)
    return config_path, poisoned


def _summary(config_path: Path, stage: str, run_id: str) -> dict:
    ctx = RunContext.create(load_config(config_path), season="2024", run_id=run_id)
    return json.loads(ctx.storage.local_path(summary_uri(ctx, stage)).read_text())


def test_a_failed_tile_beyond_the_tolerance_fails_the_run_naming_it_and_the_rerun(
    downloaded: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, poisoned = downloaded
    code = main(["run", "features", "--config", str(config), "--season", "2024", "--run-id", "ft-1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 of 4 tile(s) failed, more than the 0 failures.mapped tolerates" in err
    assert f"lcms rerun-failed features --config {config} --season 2024 --run-id ft-1" in err
    assert poisoned in err and "truncated" in err
    summary = _summary(config, "features", "ft-1")  # written all the same: the re-run reads it
    assert list(summary["failed"]) == [poisoned] and not summary["within_tolerance"]


def test_within_the_tolerance_the_failed_tile_is_a_gap_until_the_rerun_fills_it(
    downloaded: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, poisoned = _tolerating(downloaded[0], mapped={"max_count": 1}), downloaded[1]
    args = ["--config", str(config), "--season", "2024"]
    assert main(["run", "features", *args, "--run-id", "ft-1"]) == 1  # tiles failed, yet the run is usable
    err = capsys.readouterr().err
    assert "within the 1 failures.mapped tolerates" in err and "--exclude" in err
    summary = _summary(config, "features", "ft-1")
    assert summary["within_tolerance"] and summary["tiles_complete"] == 3
    gap = summary["excluded"][poisoned]
    assert gap.startswith("features failed (run ft-1): CorruptArrayError") and "truncated" in gap

    # The stage below refuses the missing input, unless told it is a gap.
    assert main(["run", "add_reference", *args]) == 2
    assert poisoned in capsys.readouterr().err
    assert main(["run", "add_reference", *args, "--exclude", f"{poisoned}={gap}"]) == 0
    ctx = RunContext.create(load_config(config), season="2024")
    assert poisoned not in ctx.storage.complete_children(ctx.stage_uri("add_reference"))

    # A re-run while the imagery is still corrupt fails again, naming its own run id.
    assert main(["rerun-failed", "features", *args, "--run-id", "ft-1", "--new-run-id", "ft-2"]) == 1
    assert list(_summary(config, "features", "ft-2")["failed"]) == [poisoned]

    # Fixed upstream, the re-run processes that tile only and leaves no gap.
    before = {t.id: ctx.storage.read_marker(ctx.tile_uri("features", t.id)) for t in ctx.tiles() if t.id != poisoned}
    assert main(["run", "download", *args, "--tile", poisoned, "--run-id", "dl-fix"]) == 0
    assert main(["rerun-failed", "features", *args, "--run-id", "ft-1", "--new-run-id", "ft-3"]) == 0
    after = _summary(config, "features", "ft-3")
    assert after["failed"] == {} and after["excluded"] == {} and after["rerun_of"] == "ft-1"
    assert ctx.storage.read_marker(ctx.tile_uri("features", poisoned))["run_id"] == "ft-3"
    assert {t: ctx.storage.read_marker(ctx.tile_uri("features", t)) for t in before} == before


def test_rerun_needs_a_run_with_failed_tiles(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config", str(config_path), "--season", "2024"]
    assert main(["rerun-failed", "download", *args, "--run-id", "nope"]) == 2
    assert "no summary of run 'nope' of stage 'download' in season 2024" in capsys.readouterr().err
    assert main(["run", "download", *args, "--run-id", "dl"]) == 0
    assert main(["rerun-failed", "download", *args, "--run-id", "dl"]) == 2
    assert "had no failed tile: nothing to re-run" in capsys.readouterr().err


def test_season_step_and_summary_leave_the_failed_tiles_out(downloaded: tuple[Path, str]) -> None:
    config, poisoned = _tolerating(downloaded[0], mapped={"max_fraction": 0.25}), downloaded[1]
    ctx = RunContext.create(load_config(config), season="2024", run_id="ft-1", excluded={"elsewhere": "download: x"})
    result = run_tiles("features", ctx.tiles(), ctx, raise_on_failure=False)
    assert list(result.failed) == [poisoned]
    outcome = assess("features", ctx)
    assert outcome.allowed == 1 and outcome.within_tolerance and outcome.planned == [t.id for t in ctx.tiles()]
    assert poisoned not in [t.id for t in check_within_tolerance("features", ctx).tiles()]
    summary = finish_stage_run("features", ctx)
    assert summary["excluded_upstream"] == {"elsewhere": "download: x"}
    assert set(summary["excluded"]) == {"elsewhere", poisoned}


def test_beyond_tolerance_the_season_step_builds_nothing(downloaded: tuple[Path, str]) -> None:
    config, _ = downloaded
    ctx = RunContext.create(load_config(config), season="2024", run_id="ft-1")
    run_tiles("features", ctx.tiles(), ctx, raise_on_failure=False)
    with pytest.raises(TooManyFailedTilesError, match="1 of 4 tile"):
        check_within_tolerance("features", ctx)


def test_a_dag_rerun_takes_the_scope_gaps_and_params_of_the_failed_run(downloaded: tuple[Path, str]) -> None:
    config, poisoned = _tolerating(downloaded[0], mapped={"max_count": 1}), downloaded[1]
    cfg = load_config(config)
    ids = [t.id for t in RunContext.create(cfg, season="2024").tiles()]
    scope = [i for i in ids if i != ids[3]]
    ctx = RunContext.create(cfg, season="2024", run_id="ft-1", config_path=str(config), subset=scope)
    run_tiles("features", ctx.tiles(), ctx, raise_on_failure=False)
    finish_stage_run("features", ctx)
    found = rerun_spec("features", ctx, "ft-1")
    assert found["tiles"] == scope and found["failed"] == [poisoned] and found["excluded"] == {}

    spec = runs.run_spec_from_params({"config": str(config), "season": "2024", "rerun_failed": "ft-1"}, "features")
    prepared = runs.prepare_spec(spec, "features", "manual__rerun", None)
    assert prepared["tiles"] == scope and prepared["skip_existing"] and prepared["rerun_of"] == "ft-1"
    assert "rerun_failed" not in prepared
    with pytest.raises(ConfigError, match="leave `tiles` empty"):
        runs.prepare_spec({**spec, "tiles": scope}, "features", "manual__rerun", None)
    with pytest.raises(ConfigError, match="runs once per season"):
        runs.prepare_spec(spec, "training", "manual__rerun", None)


def test_a_resumed_season_stage_keeps_its_complete_result(config_path: Path) -> None:
    """With skip_existing a re-run keeps the model, so the refilled tiles are mapped by the others' model."""
    data = yaml.safe_load(config_path.read_text())
    data["stages"] = {"training": {"drop_rare_classes": True, "min_samples_per_class": 5}}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    ctx = RunContext.create(load_config(config_path), season="2023", run_id="r1")
    for stage in ("download", "features", "add_reference", "sampling"):
        run_tiles(stage, ctx.tiles(), ctx)
    run_stage("merge_features", ctx)
    run_stage("training", ctx)
    model = ctx.storage.read_marker(ctx.run_uri("training", "model"))
    resumed = RunContext.create(ctx.config, season="2023", run_id="r2", skip_existing=True)
    assert run_stage("merge_features", resumed) == [] and run_stage("training", resumed) == []
    assert ctx.storage.read_marker(ctx.run_uri("training", "model")) == model
    assert run_stage("training", RunContext.create(ctx.config, season="2023", run_id="r3"))  # without: retrained
    assert ctx.storage.read_marker(ctx.run_uri("training", "model"))["run_id"] == "r3"


def test_log_lines_name_the_run_and_the_summary_times_the_tiles(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = RunContext.create(load_config(config_path), season="2024", run_id="dl-7")
    with caplog.at_level("INFO", logger="lcms_tasks"):
        run_tiles("download", ctx.tiles(), ctx)
        summary = finish_stage_run("download", ctx)
    tile = ctx.tiles()[0].id
    [line] = [r for r in caplog.records if r.getMessage().startswith(f"download {tile}: done in")]
    assert line.getMessage().endswith(f"[project=testproj season=2024 stage=download run_id=dl-7 tile={tile}]")
    assert line.lcms == {"project": "testproj", "season": "2024", "stage": "download", "run_id": "dl-7", "tile": tile}
    assert "(batch: 1 done, 0 failed, 3 left)" in line.getMessage()
    timing = summary["durations"]
    assert timing["n_tiles"] == 4 and 0 < timing["min_s"] <= timing["median_s"] <= timing["max_s"]
    assert timing["slowest"][0]["seconds"] == timing["max_s"] and len(timing["slowest"]) == 4
    assert any(
        "download: 4 of 4 tile(s) done, 0 failed (0 tolerated); seconds per tile" in r.getMessage()
        for r in caplog.records
    )
