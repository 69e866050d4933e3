"""The season timetable: ``lcms_download`` runs once per season of the project config.

A season is the unit of work of LCMS (one map per season), so the schedule's data intervals are the
config's seasons, not the periods of a cron expression: the data interval of a season's run is
``[start, end + 1 day)`` (midnight UTC) and the run starts ``delay_days`` after that interval ends. The
scheduler then runs each season once it is over, ``airflow backfill create --dag-id lcms_download
--from-date A --to-date B`` creates one run per season that starts in ``[A, B]``, and the ``resolve`` task
of each run processes the season its data interval names (see :func:`lcms_airflow.runs.season_for_date`).

The plugin registers the class (Airflow's serializer refuses a timetable no plugin registers); the DAG
carries the seasons in its serialized form, so the scheduler never reads the project config.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.timetables.base import DagRunInfo, DataInterval, Timetable
from pendulum import UTC, DateTime

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction
    from airflow.utils.types import DagRunType

log = logging.getLogger(__name__)


class Season(NamedTuple):
    id: str
    start: dt.date
    end: dt.date  # inclusive


def _midnight(day: dt.date) -> DateTime:
    return DateTime(day.year, day.month, day.day, tzinfo=UTC)


class SeasonTimetable(Timetable):
    """One run per season, after the season's end (plus ``delay_days``); the data interval is the season."""

    periodic = True
    can_be_scheduled = True

    def __init__(self, seasons: Iterable[tuple[str, dt.date, dt.date]], delay_days: int = 0) -> None:
        self.seasons = tuple(sorted((Season(*s) for s in seasons), key=lambda s: (s.start, s.end, s.id)))
        self.delay_days = int(delay_days)
        names = ", ".join(s.id for s in self.seasons)
        self.description = f"One run per season ({names}), {self.delay_days} day(s) after the season ends"

    # -- what Airflow asks -------------------------------------------------------------------------------------

    @property
    def summary(self) -> str:
        if not self.seasons:
            return "seasons: none"
        first, last = self.seasons[0].id, self.seasons[-1].id
        span = first if first == last else f"{first} … {last}"
        return f"seasons {span}" + (f" (+{self.delay_days} d)" if self.delay_days else "")

    def validate(self) -> None:
        from airflow.exceptions import AirflowTimetableInvalid

        if not self.seasons:
            raise AirflowTimetableInvalid("the season timetable needs at least one season")
        if self.delay_days < 0:
            raise AirflowTimetableInvalid(f"delay_days must be >= 0, not {self.delay_days}")

    def serialize(self) -> dict[str, Any]:
        return {
            "seasons": [[s.id, s.start.isoformat(), s.end.isoformat()] for s in self.seasons],
            "delay_days": self.delay_days,
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> SeasonTimetable:
        seasons = [(sid, dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for sid, a, b in data["seasons"]]
        return cls(seasons, delay_days=int(data.get("delay_days", 0)))

    def data_interval(self, season: Season) -> DataInterval:
        return DataInterval(_midnight(season.start), _midnight(season.end + dt.timedelta(days=1)))

    def run_info(self, season: Season) -> DagRunInfo:
        interval = self.data_interval(season)
        return DagRunInfo(run_after=interval.end.add(days=self.delay_days), data_interval=interval)

    def season_of(self, interval: DataInterval | None) -> Season | None:
        """The season whose data interval this is (None for an interval that is no season's)."""
        if interval is None:
            return None
        for season in self.seasons:
            if self.data_interval(season) == (interval.start, interval.end):
                return season
        return None

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        candidates = list(self.seasons)
        if last_automated_data_interval is not None:
            candidates = [s for s in candidates if _midnight(s.start) > last_automated_data_interval.start]
        if restriction.earliest is not None:
            candidates = [s for s in candidates if _midnight(s.start) >= restriction.earliest]
        if not restriction.catchup:
            # Without catch-up the scheduler runs the latest season that is over, not every one before it.
            now = DateTime.now(UTC)
            over = [s for s in candidates if self.run_info(s).run_after <= now]
            if over:
                candidates = candidates[candidates.index(over[-1]) :]
        if not candidates:
            return None
        season = candidates[0]
        if restriction.latest is not None and _midnight(season.start) > restriction.latest:
            return None
        return self.run_info(season)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """A run triggered by hand: the latest season over by then (its ``season`` parameter decides)."""
        over = [s for s in self.seasons if self.data_interval(s).end <= run_after]
        return self.data_interval(over[-1]) if over else DataInterval.exact(run_after)

    def generate_run_id(
        self, *, run_type: DagRunType, run_after: DateTime, data_interval: DataInterval | None, **extra: Any
    ) -> str:
        season = self.season_of(data_interval)
        suffix = run_after.isoformat()
        return run_type.generate_run_id(suffix=f"season_{season.id}__{suffix}" if season else suffix)


def season_timetable(config_path: str) -> tuple[SeasonTimetable | None, dt.datetime | None, bool]:
    """The first stage's schedule from the project config: (timetable or None, start date, catch-up).

    A config that does not load leaves the DAG without a schedule (and says why in the log) rather than
    without a DAG: its manual runs then fail in ``resolve`` with the config's own message.
    """
    import yaml

    # A first look without the domain library: the DAG processor parses this file often, and a config
    # without a season schedule (the default) must cost it no import of lcms_tasks.config (numpy).
    try:
        with open(config_path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        wanted = isinstance(raw, dict) and isinstance(raw.get("schedule"), dict) and "timetable" in raw["schedule"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        wanted = True  # load_config below says what is wrong with it
    if not wanted:
        return None, None, False

    from lcms_tasks.config import load_config

    try:
        cfg = load_config(config_path, check_files=False)
    except Exception as err:  # any config problem: no schedule, the DAG itself stays usable
        log.warning("lcms_download has no schedule: its config %s does not load: %s", config_path, err)
        return None, None, False
    if cfg.schedule.timetable != "seasons":
        return None, None, False
    timetable = SeasonTimetable(
        [(sid, s.start, s.end) for sid, s in cfg.seasons.items()], delay_days=cfg.schedule.delay_days
    )
    first = timetable.seasons[0].start
    return timetable, dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC), cfg.schedule.catchup
