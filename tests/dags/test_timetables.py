"""The season timetable: data intervals are the config's seasons; schedules, backfills, serialization."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pendulum
import pytest
import yaml
from airflow.timetables.base import DataInterval, TimeRestriction

from lcms_airflow.runs import season_for_date
from lcms_airflow.timetables import SeasonTimetable, season_timetable

SEASONS = [
    ("2022", dt.date(2022, 3, 1), dt.date(2022, 10, 31)),
    ("2021", dt.date(2021, 3, 1), dt.date(2021, 10, 31)),  # out of order on purpose
    ("2023", dt.date(2023, 3, 1), dt.date(2023, 10, 31)),
]
UTC = pendulum.UTC


def _day(y: int, m: int, d: int) -> pendulum.DateTime:
    return pendulum.datetime(y, m, d, tz=UTC)


def _all(tt: SeasonTimetable, restriction: TimeRestriction) -> list[tuple]:
    out, last = [], None
    while (info := tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)) is not None:
        out.append((tt.season_of(info.data_interval).id, info.data_interval, info.run_after))
        last = info.data_interval
        assert len(out) < 10
    return out


def test_each_season_is_one_data_interval_and_the_run_follows_its_end() -> None:
    tt = SeasonTimetable(SEASONS, delay_days=5)
    runs = _all(tt, TimeRestriction(earliest=_day(2020, 1, 1), latest=None, catchup=True))
    assert [r[0] for r in runs] == ["2021", "2022", "2023"]
    _, interval, run_after = runs[0]
    assert interval == DataInterval(_day(2021, 3, 1), _day(2021, 11, 1))  # the season's last day included
    assert run_after == _day(2021, 11, 6)
    # the run's resolve step finds the same season from the interval's end
    cfg_seasons = {s: (a, b) for s, a, b in SEASONS}
    assert [season_for_date(cfg_seasons, r[1].end.date()) for r in runs] == ["2021", "2022", "2023"]


def test_a_backfill_window_selects_the_seasons_starting_in_it() -> None:
    tt = SeasonTimetable(SEASONS)
    window = TimeRestriction(earliest=_day(2021, 6, 1), latest=_day(2023, 3, 1), catchup=True)
    assert [r[0] for r in _all(tt, window)] == ["2022", "2023"]
    assert _all(tt, TimeRestriction(earliest=_day(2024, 1, 1), latest=None, catchup=True)) == []


def test_without_catchup_the_scheduler_runs_only_the_latest_season_that_is_over() -> None:
    future = ("2099", dt.date(2099, 3, 1), dt.date(2099, 10, 31))
    tt = SeasonTimetable([*SEASONS, future])
    no_catchup = TimeRestriction(earliest=_day(2021, 1, 1), latest=None, catchup=False)
    first = tt.next_dagrun_info(last_automated_data_interval=None, restriction=no_catchup)
    assert tt.season_of(first.data_interval).id == "2023"
    nxt = tt.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=no_catchup)
    assert tt.season_of(nxt.data_interval).id == "2099" and nxt.run_after == _day(2099, 11, 1)
    assert tt.next_dagrun_info(last_automated_data_interval=nxt.data_interval, restriction=no_catchup) is None


def test_manual_runs_and_run_ids_name_the_season() -> None:
    from airflow.utils.types import DagRunType

    tt = SeasonTimetable(SEASONS)
    assert tt.infer_manual_data_interval(run_after=_day(2022, 12, 24)) == tt.data_interval(tt.seasons[1])
    before_any = tt.infer_manual_data_interval(run_after=_day(2020, 5, 5))
    assert before_any.start == before_any.end == _day(2020, 5, 5)
    run_id = tt.generate_run_id(
        run_type=DagRunType.BACKFILL_JOB, run_after=_day(2021, 11, 1), data_interval=tt.data_interval(tt.seasons[0])
    )
    assert run_id.startswith("backfill__season_2021__2021-11-01")


def test_serialization_round_trip_and_validation() -> None:
    from airflow.exceptions import AirflowTimetableInvalid

    tt = SeasonTimetable(SEASONS, delay_days=3)
    back = SeasonTimetable.deserialize(tt.serialize())
    assert back.seasons == tt.seasons and back.delay_days == 3 and back.summary == "seasons 2021 … 2023 (+3 d)"
    with pytest.raises(AirflowTimetableInvalid, match="at least one season"):
        SeasonTimetable([]).validate()


def test_the_config_sets_the_download_dag_schedule(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`schedule: {timetable: seasons}` in the config schedules lcms_download; the DAG serializes (the plugin
    registers the class) and its backfill infos are the seasons; without it the DAG runs by hand only."""
    from airflow.serialization.serialized_objects import DagSerialization

    from lcms_airflow.factory import build_stage_dag

    monkeypatch.setenv("LCMS_CONFIG", str(config_path))
    assert season_timetable(str(config_path))[0] is None
    assert type(build_stage_dag("download").timetable).__name__ == "NullTimetable"

    cfg = yaml.safe_load(config_path.read_text())
    cfg["schedule"] = {"timetable": "seasons", "delay_days": 2}
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dag = build_stage_dag("download")
    assert isinstance(dag.timetable, SeasonTimetable) and dag.timetable.delay_days == 2
    first = min(dt.date.fromisoformat(str(s["start"])) for s in cfg["seasons"].values())
    assert dag.start_date.date() == first and dag.catchup is False
    assert type(build_stage_dag("features").timetable).__name__ == "AssetTriggeredTimetable"

    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert isinstance(restored.timetable, SeasonTimetable)
    infos = list(restored.iter_dagrun_infos_between(_day(2000, 1, 1), _day(2100, 1, 1)))
    assert [restored.timetable.season_of(i.data_interval).id for i in infos] == sorted(cfg["seasons"])


def test_a_config_that_does_not_load_leaves_the_dag_without_a_schedule(tmp_path: Path, caplog) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("project: [unclosed\n")
    assert season_timetable(str(bad)) == (None, None, False)
    assert "does not load" in caplog.text and "bad.yaml" in caplog.text
