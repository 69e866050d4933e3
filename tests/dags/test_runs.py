"""Run resolution: trigger params vs upstream asset events; ECS command lines."""

from __future__ import annotations

from lcms_airflow.runs import resolve_run_specs, run_spec_from_params, run_specs_from_events
from lcms_airflow.tile_runners import batch_command


def test_params_spec_defaults_to_demo_config() -> None:
    spec = run_spec_from_params({})
    assert spec["config"].endswith("configs/demo.yaml")
    assert spec["season"] == "" and spec["tiles"] == [] and spec["skip_existing"] is False


def test_params_tiles_accept_comma_separated_text() -> None:
    assert run_spec_from_params({"tiles": "a_1_2, a_1_3 a_1_4"})["tiles"] == ["a_1_2", "a_1_3", "a_1_4"]


def test_events_carry_upstream_run() -> None:
    extras = [
        {"config": "/c.yaml", "season": "2023", "tiles": ["t1"], "run_id": "dl1", "project": "p"},
        {"config": "/c.yaml", "season": "2024", "run_id": "dl2", "project": "p"},
        {"config": "/c.yaml", "season": "2023", "run_id": "dl3", "project": "p"},  # later event for 2023 wins
        {"unrelated": True},
    ]
    specs = run_specs_from_events(extras)
    assert [(s["season"], s["upstream_run_id"]) for s in specs] == [("2023", "dl3"), ("2024", "dl2")]


def test_events_take_precedence_over_params() -> None:
    specs = resolve_run_specs(
        {"config": "/other.yaml", "season": "1999"}, [{"config": "/c.yaml", "season": "2023", "run_id": "r"}]
    )
    assert specs[0]["config"] == "/c.yaml" and specs[0]["season"] == "2023"
    assert resolve_run_specs({"config": "/x.yaml"}, [])[0]["config"] == "/x.yaml"


def test_batch_command() -> None:
    item = {
        "config": "/c.yaml",
        "season": "2023",
        "run_id": "r1",
        "batch": "b0001",
        "tiles": ["t1", "t2"],
        "skip_existing": True,
        "upstream_run_id": "u1",
    }
    assert batch_command("features", item) == [
        "lcms",
        "run",
        "features",
        "--config",
        "/c.yaml",
        "--season",
        "2023",
        "--run-id",
        "r1",
        "--batch",
        "b0001",
        "--subset",
        "t1",
        "--subset",
        "t2",
        "--skip-existing",
        "--upstream-run-id",
        "u1",
    ]


def test_season_for_scheduled_runs() -> None:
    import datetime as dt

    import pytest

    from lcms_airflow.runs import season_for_date

    seasons = {
        "2023": (dt.date(2023, 3, 1), dt.date(2023, 10, 31)),
        "2024": (dt.date(2024, 3, 1), dt.date(2024, 10, 31)),
    }
    assert season_for_date(seasons, dt.date(2025, 1, 1)) == "2024"  # yearly run early in 2025
    assert season_for_date(seasons, dt.date(2024, 6, 1)) == "2023"  # mid-2024: 2024 not complete yet
    with pytest.raises(ValueError, match="no season of the config has ended by 2023-05-01"):
        season_for_date(seasons, dt.date(2023, 5, 1))


def test_download_schedule_from_environment(monkeypatch) -> None:
    from lcms_airflow.factory import build_stage_dag

    monkeypatch.setenv("LCMS_DOWNLOAD_SCHEDULE", "@yearly")
    dag = build_stage_dag("download")
    assert type(dag.timetable).__name__ != "NullTimetable"
    assert type(build_stage_dag("features").timetable).__name__ == "AssetTriggeredTimetable"
