"""Comparison of a season's report with the previous season's: class areas per region, possible map drift.

:func:`compare_class_areas` takes two report dicts (``report.json`` of this season and of the one
before) and lists, per region and for the AOI as a whole (the sum of the regions), every legend
class's mapped area in both seasons, the change in km² and as a fraction of the previous area. A
change beyond ``threshold`` (a fraction: 0.2 = more than 20 % up or down), and at least
``min_area_km2`` in absolute terms, is flagged as *possible map drift*: land cover rarely moves that
much in a season, so a class that does is more often a model or imagery problem than a real change.
A class absent in the previous season and present now is flagged too (its relative change is
undefined and shown as such).

No data (class 0) is not compared: it is a matter of imagery (see the data quality section), not of
the map. Regions are matched by name and classes by id. Anything that makes the areas less
comparable — other tiles, another legend, regions missing from one of the reports, a different mapped
area — is listed under ``notes``; the comparison is still made.

:func:`unavailable` is the block when there is nothing to compare with (first season, previous report
absent or unreadable), saying why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The zone that sums every region: the AOI-clipped figures of the report (``aoi.class_areas``).
AOI_ZONE = "AOI (all regions)"
#: Relative difference of a zone's mapped area (no data excluded) in the two seasons beyond which it is noted.
MAPPED_AREA_TOLERANCE = 0.01


def unavailable(reason: str, season: str | None = None, uri: str | None = None) -> dict[str, Any]:
    """The ``previous_season`` block when there is no comparison: ``reason`` says why, in words."""
    return {"available": False, "season": season, "uri": uri, "reason": reason}


def _areas(rows: Sequence[Mapping[str, Any]]) -> dict[int, tuple[str, str | None, float]]:
    """{class id: (name, colour, area km²)} of a report's class-area rows, no data left out."""
    return {
        int(r["id"]): (str(r.get("name")), r.get("color"), float(r.get("area_km2") or 0.0))
        for r in rows
        if int(r["id"]) != 0
    }


def _zones(report: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """{zone name: class-area rows}: the regions in report order, then the AOI as a whole."""
    zones = {str(r["name"]): list(r.get("class_areas") or []) for r in report.get("regions") or []}
    zones[AOI_ZONE] = list((report.get("aoi") or {}).get("class_areas") or [])
    return zones


def _mapped_km2(rows: Sequence[Mapping[str, Any]]) -> float:
    """The area of a zone's class-area rows that has a class (no data excluded)."""
    return sum(float(r.get("area_km2") or 0.0) for r in rows if int(r["id"]) != 0)


def class_change(previous: float, current: float, threshold: float, min_area_km2: float = 0.0) -> dict[str, Any]:
    """One class's change between seasons: km², fraction of the previous area, and whether it is drift."""
    change = current - previous
    relative = change / previous if previous > 0 else None
    new = previous <= 0 < current
    big = abs(change) >= min_area_km2 and abs(change) > 0
    drift = big and (new or (relative is not None and abs(relative) > threshold))
    return {
        "previous_km2": previous,
        "current_km2": current,
        "change_km2": change,
        "relative_change": relative,
        "new_class": new,
        "drift": bool(drift),
    }


def compare_class_areas(
    current: Mapping[str, Any],
    previous: Mapping[str, Any],
    threshold: float = 0.2,
    min_area_km2: float = 0.0,
) -> dict[str, Any]:
    """The ``previous_season`` block: class areas per region of ``previous`` and ``current`` (report dicts).

    ``threshold``: a fraction of the previous area; changes beyond it (and of at least
    ``min_area_km2``) are flagged as possible map drift (``drift``, listed again under ``drifting``).
    """
    if threshold <= 0:
        raise ValueError(f"drift threshold {threshold!r} must be a positive fraction (0.2 = 20 %)")
    prev_run, cur_run = previous.get("run") or {}, current.get("run") or {}
    notes: list[str] = []
    prev_tiles, cur_tiles = prev_run.get("tile_subset"), cur_run.get("tile_subset")
    if prev_tiles != cur_tiles or prev_run.get("n_tiles") != cur_run.get("n_tiles"):

        def covers(run: Mapping[str, Any]) -> str:
            subset = run.get("tile_subset")
            return f"a subset of {len(subset)} tiles" if subset else f"all {run.get('n_tiles')} tiles"

        notes.append(
            f"the reports cover other tiles (season {prev_run.get('season')}: {covers(prev_run)}; "
            f"season {cur_run.get('season')}: {covers(cur_run)}): their areas are not like for like"
        )
    prev_legend = {int(c["id"]): str(c["name"]) for c in previous.get("legend") or []}
    cur_legend = {int(c["id"]): str(c["name"]) for c in current.get("legend") or []}
    renamed = [
        f"{i}: {prev_legend[i]} → {cur_legend[i]}"
        for i in sorted(set(prev_legend) & set(cur_legend))
        if prev_legend[i] != cur_legend[i]
    ]
    if set(prev_legend) != set(cur_legend) or renamed:
        notes.append(
            "the legends differ (classes are matched by id"
            + (f"; renamed {', '.join(renamed)}" if renamed else "")
            + ")"
        )
    prev_zones, cur_zones = _zones(previous), _zones(current)
    only_prev = [z for z in prev_zones if z not in cur_zones]
    only_cur = [z for z in cur_zones if z not in prev_zones]
    if only_prev:
        notes.append(f"regions only in the previous season's report: {', '.join(only_prev)}")
    if only_cur:
        notes.append(f"regions only in this season's report, not compared: {', '.join(only_cur)}")

    zones: list[dict[str, Any]] = []
    drifting: list[dict[str, Any]] = []
    for name, rows in cur_zones.items():
        if name not in prev_zones:
            continue
        before, now = _areas(prev_zones[name]), _areas(rows)
        prev_mapped, cur_mapped = _mapped_km2(prev_zones[name]), _mapped_km2(rows)
        if abs(cur_mapped - prev_mapped) > MAPPED_AREA_TOLERANCE * max(prev_mapped, cur_mapped, 1e-12):
            notes.append(
                f"{name}: the area with a class (no data excluded) differs ({prev_mapped:.4f} km² then, "
                f"{cur_mapped:.4f} km² now): part of the class-area changes comes from there"
            )
        classes = []
        for cid in sorted(set(before) | set(now)):
            cname, colour, area = now.get(cid) or (before[cid][0], before[cid][1], 0.0)
            row = {"id": cid, "name": cname, "color": colour}
            row |= class_change(before.get(cid, ("", None, 0.0))[2], area, threshold, min_area_km2)
            if row["previous_km2"] == 0 and row["current_km2"] == 0:
                continue  # in neither map: nothing to say
            classes.append(row)
            if row["drift"]:
                drifting.append({"region": name, **row})
        zones.append(
            {
                "region": name,
                "previous_mapped_km2": prev_mapped,
                "current_mapped_km2": cur_mapped,
                "classes": classes,
                "n_drift": sum(1 for c in classes if c["drift"]),
            }
        )
    return {
        "available": True,
        "season": prev_run.get("season"),
        "run_id": prev_run.get("run_id"),
        "generated_at": prev_run.get("generated_at"),
        "drift_threshold": threshold,
        "drift_min_area_km2": min_area_km2,
        "definition": "relative change = (area this season − area previous season) / area previous season; "
        f"possible map drift where |relative change| > {threshold:g}"
        + (f" and |change| ≥ {min_area_km2:g} km²" if min_area_km2 > 0 else "")
        + ", or a class absent in the previous season; no data is not compared",
        "notes": notes,
        "regions": zones,
        "n_drift": len(drifting),
        "drifting": drifting,
    }
