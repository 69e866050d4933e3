"""Change accuracy with a temporal tolerance: a change detected a season late is late, not wrong.

A land-cover change happens at some time inside a season, or near the boundary between two; the map of
the season it happened in may still show the old class (a field cleared in October, a forest cut after
the last clear image), so the change shows up one season later. Counting that as a false detection in
the later season *and* a miss in the earlier one punishes the map twice for one right answer given late.

Areas (m², in one projected CRS, per tile, summed over tiles before any ratio) between the dissolved
detected changes of season ``s`` (``D_s``) and the dissolved reference changes of season ``r`` (``R_r``),
with tolerance ``k`` seasons:

* **precision** of season ``s``: ``D_s`` splits into *on time* ``D_s ∩ R_s``, *late* the rest of it
  inside ``R_{s-k} ∪ … ∪ R_{s-1}`` and *false* the rest. ``precision = on_time / D_s``,
  ``precision_with_tolerance = (on_time + late) / D_s``.
* **recall** of reference season ``r`` (known once the seasons ``r .. r+k`` are mapped): ``R_r`` splits
  into *on time* ``R_r ∩ D_r``, *late* the rest of it inside ``D_{r+1} ∪ … ∪ D_{r+k}`` and *missed* the
  rest. ``recall = on_time / R_r``, ``recall_with_tolerance = (on_time + late) / R_r``. A season's report
  gives the recall of its own season (late detections cannot be known yet: ``pending`` says so) and,
  with tolerance, the completed recall of the season ``k`` before it.

Edge cases as in :mod:`lcms_tasks.report.evaluate`: no detection gives precision None; no reference
change gives recall None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any


def _union(geoms: Iterable[Any]) -> Any:
    import shapely

    valid = [shapely.make_valid(g) for g in geoms if g is not None and not g.is_empty]
    return shapely.union_all(valid) if valid else shapely.Polygon()


@dataclass(frozen=True)
class TimingAreas:
    """A change area split by timing (m²): ``total``, the part found in the same season (``on_time``), the
    part found within the tolerance but not on time (``late``) and the rest (``rest``: false detections for
    detected changes, missed ones for reference changes)."""

    total_m2: float = 0.0
    on_time_m2: float = 0.0
    late_m2: float = 0.0

    @property
    def rest_m2(self) -> float:
        return max(self.total_m2 - self.on_time_m2 - self.late_m2, 0.0)

    def __add__(self, other: TimingAreas) -> TimingAreas:
        return TimingAreas(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def timing_areas(changes: Iterable[Any], same_season: Iterable[Any], within_tolerance: Iterable[Any]) -> TimingAreas:
    """Split the dissolved ``changes`` of one season against the other side's polygons: on time (inside
    ``same_season``), late (inside ``within_tolerance`` and not on time), the rest.

    For detections, the other side is the reference changes of the same season and of the seasons before
    within the tolerance; for reference changes, the detections of the same season and of the seasons after.
    """
    import shapely

    a, same, other = _union(changes), _union(same_season), _union(within_tolerance)
    on_time = shapely.intersection(a, same)
    late = shapely.intersection(shapely.difference(a, same), other)
    return TimingAreas(float(a.area), float(on_time.area), float(late.area))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _scores(areas: TimingAreas, total: str, rest: str, ratio: str) -> dict[str, Any]:
    return {
        f"{total}_km2": areas.total_m2 / 1e6,
        "on_time_km2": areas.on_time_m2 / 1e6,
        "late_km2": areas.late_m2 / 1e6,
        f"{rest}_km2": areas.rest_m2 / 1e6,
        ratio: _ratio(areas.on_time_m2, areas.total_m2),
        f"{ratio}_with_tolerance": _ratio(areas.on_time_m2 + areas.late_m2, areas.total_m2),
    }


def detection_scores(areas: TimingAreas) -> dict[str, Any]:
    """Detected changes: ``detected_km2``, on time, late, ``false_km2``, ``precision`` (with tolerance)."""
    return _scores(areas, "detected", "false", "precision")


def reference_scores(areas: TimingAreas) -> dict[str, Any]:
    """Reference changes: ``reference_km2``, on time, late, ``missed_km2``, ``recall`` (with tolerance)."""
    return _scores(areas, "reference", "missed", "recall")


@dataclass(frozen=True)
class TileChanges:
    """One tile's change polygons per season (season id -> geometries, one projected CRS)."""

    detected: Mapping[str, Sequence[Any]]
    reference: Mapping[str, Sequence[Any]]


def tile_tallies(
    tile: TileChanges, seasons: Sequence[str], season: str, tolerance: int
) -> tuple[TimingAreas, TimingAreas, TimingAreas | None]:
    """For the report of ``season`` (seasons in order): its detections' split, its reference changes' split
    (on time only: later maps do not exist yet), and the completed split of the reference changes of the
    season ``tolerance`` before it (None when there is no such season or the tolerance is 0)."""
    i = seasons.index(season)
    before = [g for s in seasons[max(0, i - tolerance) : i] for g in tile.reference.get(s, ())]
    det = timing_areas(tile.detected.get(season, ()), tile.reference.get(season, ()), before)
    ref_now = timing_areas(tile.reference.get(season, ()), tile.detected.get(season, ()), ())
    completed = None
    if tolerance > 0 and i - tolerance >= 0:
        earlier = seasons[i - tolerance]
        after = [g for s in seasons[i - tolerance + 1 : i + 1] for g in tile.detected.get(s, ())]
        completed = timing_areas(tile.reference.get(earlier, ()), tile.detected.get(earlier, ()), after)
    return det, ref_now, completed


def summarise(
    seasons: Sequence[str],
    season: str,
    tolerance: int,
    detections: TimingAreas,
    reference_now: TimingAreas,
    completed: TimingAreas | None,
) -> dict[str, Any]:
    """The report's ``change_accuracy`` block from the summed tallies."""
    i = seasons.index(season)
    block: dict[str, Any] = {
        "season": season,
        "tolerance_seasons": tolerance,
        "detections": detection_scores(detections),
        "reference": {
            "season": season,
            **reference_scores(reference_now),
            "pending": tolerance > 0,
            "note": "late detections of this season's changes come with the next season's map"
            if tolerance > 0
            else "no temporal tolerance",
        },
        "definition": "areas of dissolved polygons per tile, summed; on time: same season; late: detected "
        f"up to {tolerance} season(s) after the reference change",
    }
    if completed is not None:
        block["completed_reference"] = {"season": seasons[i - tolerance], **reference_scores(completed)}
    return block
