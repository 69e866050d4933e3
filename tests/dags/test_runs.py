"""Run resolution: trigger params vs upstream asset events; ECS command lines."""

from __future__ import annotations

import datetime as dt

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


def test_per_season_command_passes_the_subset_as_tiles() -> None:
    """A per-season stage on a subset (ECS): --tile per tile, and no --skip-existing (`lcms run` refuses it)."""
    item = {"config": "/c.yaml", "season": "2023", "run_id": "r1", "tiles": ["t1"], "skip_existing": True}
    cmd = batch_command("training", item)
    assert cmd[-2:] == ["--tile", "t1"] and "--skip-existing" not in cmd and "--subset" not in cmd


def test_params_are_passed_to_every_runner() -> None:
    """The ECS command and the run spec carry the run parameters; empty and foreign ones are dropped."""
    item = {"config": "/c.yaml", "season": "2024", "run_id": "r", "batch": "b0000", "params": {"before_season": "2023"}}
    assert batch_command("change_detection", item)[-2:] == ["--param", "before_season=2023"]
    spec = run_spec_from_params({"before_season": "2023", "tiles": ["a", "b"]}, stage="change_detection")
    assert spec["params"] == {"before_season": "2023"} and spec["tiles"] == ["a", "b"]
    assert run_spec_from_params({"before_season": None}, stage="change_detection")["params"] == {}
    assert run_spec_from_params({"before_season": "2023"}, stage="features")["params"] == {}


def test_worker_context_carries_params_and_subset(config_path) -> None:
    from lcms_airflow.tile_runners import run_context

    item = {
        "config": str(config_path),
        "season": "2024",
        "run_id": "r",
        "params": {"before_season": "2023"},
        "tiles": ["32638_498_3440"],
    }
    ctx = run_context(item)
    assert ctx.params == {"before_season": "2023"} and [t.id for t in ctx.tiles()] == ["32638_498_3440"]


def test_prepare_spec_checks_before_any_work(config_path) -> None:
    import pytest

    from lcms_airflow.runs import prepare_spec
    from lcms_tasks.errors import ConfigError, UpstreamMissingError

    base = {"config": str(config_path), "season": "", "tiles": [], "params": {}}
    spec = prepare_spec(dict(base), "download", "run1", None)
    assert spec["season"] == "2024" and spec["project"] == "testproj" and spec["run_id"] == "run1"
    with pytest.raises(ConfigError, match="unknown season '1999'"):
        prepare_spec({**base, "season": "1999"}, "download", "run1", None)
    with pytest.raises(ConfigError, match="not in this project's grid: nope"):
        prepare_spec({**base, "tiles": ["nope"]}, "download", "run1", None)
    with pytest.raises(ConfigError, match="before season '1999'"):
        prepare_spec({**base, "params": {"before_season": "1999"}}, "change_detection", "run1", None)
    with pytest.raises(UpstreamMissingError, match=r"features \(season 2023\) needs the download"):
        prepare_spec({**base, "season": "2023"}, "features", "run1", None)
    scheduled = prepare_spec(dict(base), "download", "run2", dt.date(2025, 1, 1))
    assert scheduled["season"] == "2024"


def test_local_stack_waits_for_sqlite_locks_only_on_sqlite(tmp_path) -> None:
    """SQLite metadata: a 60 s lock wait (no HTTP 500 under a busy scheduler); PostgreSQL: untouched."""
    from lcms_airflow.local_stack import LocalAirflow

    env = LocalAirflow(home=tmp_path / "a").env()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == "lcms_airflow.sqlite_settings.CONNECT_ARGS"
    from lcms_airflow.sqlite_settings import CONNECT_ARGS

    assert CONNECT_ARGS["timeout"] >= 30
    pg = LocalAirflow(
        home=tmp_path / "b", extra_env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u@h/db"}
    ).env()
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in pg


def test_gaps_flow_from_events_into_specs_and_ecs_commands() -> None:
    """An upstream run's failed tiles (its event's ``excluded``) reach the next stage and its ECS tasks."""
    from lcms_tasks.cli import _parse_excluded

    gaps = {"t9": "features failed (run r0): CorruptArrayError: truncated = 3 bytes", "t8": "download failed"}
    [spec] = run_specs_from_events([{"config": "/c.yaml", "season": "2023", "run_id": "r0", "excluded": gaps}])
    assert spec["excluded"] == gaps and run_spec_from_params({})["excluded"] == {}
    cmd = batch_command("sampling", {**spec, "run_id": "r1", "batch": "b0000"})
    values = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--exclude"]
    assert values == [f"t8={gaps['t8']}", f"t9={gaps['t9']}"]
    assert _parse_excluded(values) == gaps  # what `lcms run` reads back: the reason may hold '='
    assert run_spec_from_params({"rerun_failed": " r0 "})["rerun_failed"] == "r0"
