"""Reading the inputs of ``lcms accuracy area``: a confusion matrix CSV and a mapped-area CSV.

CONFUSION.csv (comma-separated, UTF-8, an optional byte-order mark)::

    map \\ reference,forest,cropland,water      <- header: any first cell, then reference classes
    forest,120,8,0                             <- one row per map class: its name, then counts
    cropland,5,90,1
    water,0,2,50

The rows and the header must name the same classes (in any order); a class found only in the
reference gets a row of zeros and area 0. Counts are whole numbers >= 0. AREAS.csv has the columns
``class`` and ``area`` (any order; other columns are ignored), one row per class, areas >= 0 in any
unit. Blank lines are skipped. Every problem raises
:class:`~lcms_tasks.accuracy.estimate.AccuracyInputError` naming the file, the line (1-based, as
an editor shows it) and, for a count, the column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lcms_tasks.accuracy.estimate import AccuracyInputError


@dataclass(frozen=True)
class ConfusionTable:
    """A confusion matrix read from a file: counts[i][j] = map class ``rows[i]``, reference ``columns[j]``."""

    path: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: np.ndarray  # (R, C) int64
    lines: tuple[int, ...]  # line of each row in the file


def csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped cells) of every non-blank record of a CSV file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            start = 1
            for cells in reader:
                # line_num is the line the record ends on; a record spans lines only with quoted newlines.
                line, start = start, reader.line_num + 1
                stripped = [c.strip() for c in cells]
                if any(stripped):
                    yield line, stripped
    except FileNotFoundError as err:
        raise AccuracyInputError("no such file", path=str(path)) from err
    except IsADirectoryError as err:
        raise AccuracyInputError("is a directory, not a CSV file", path=str(path)) from err
    except UnicodeDecodeError as err:
        raise AccuracyInputError(f"not a UTF-8 text file ({err.reason})", path=str(path)) from err
    except csv.Error as err:
        raise AccuracyInputError(f"not a valid CSV file ({err})", path=str(path)) from err


def _count(text: str, *, path: str, line: int, column: int, row: str, ref: str) -> int:
    where = f"column {column} (map class {row!r}, reference class {ref!r})"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if text == "" or not math.isfinite(value):
        shown = "an empty cell" if text == "" else repr(text)
        raise AccuracyInputError(f"{where}: {shown} is not a count", path=path, line=line)
    if value < 0:
        raise AccuracyInputError(f"{where}: negative count {text}", path=path, line=line)
    if value != math.floor(value):
        raise AccuracyInputError(f"{where}: {text} is not a whole number of sample units", path=path, line=line)
    return int(value)


def _check_names(names: list[str], *, path: str, line: int, what: str) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=2):
        if not name:
            raise AccuracyInputError(f"{what}: column {position} has no class name", path=path, line=line)
        if name in seen:
            raise AccuracyInputError(
                f"{what}: class {name!r} appears twice (columns {seen[name]} and {position})", path=path, line=line
            )
        seen[name] = position


def read_confusion(path: str | Path) -> ConfusionTable:
    """The confusion matrix of ``path``, columns put in the order of the rows (see the module docstring)."""
    name = str(path)
    records = list(csv_records(Path(path)))
    if not records:
        raise AccuracyInputError("the file is empty: expected a header row of reference classes", path=name)
    header_line, header = records[0]
    columns = header[1:]
    if not columns:
        raise AccuracyInputError(
            "the header names no reference class: expected 'map class,<reference class>,<reference class>,...'",
            path=name,
            line=header_line,
        )
    _check_names(columns, path=name, line=header_line, what="header")
    if len(records) == 1:
        raise AccuracyInputError("no row of counts below the header", path=name, line=header_line)
    rows: list[str] = []
    lines: list[int] = []
    counts: list[list[int]] = []
    row_line: dict[str, int] = {}
    for line, cells in records[1:]:
        row = cells[0]
        if not row:
            raise AccuracyInputError("the row has no map class name in its first column", path=name, line=line)
        if row in row_line:
            raise AccuracyInputError(
                f"map class {row!r} appears twice (lines {row_line[row]} and {line})", path=name, line=line
            )
        row_line[row] = line
        values = cells[1:]
        if len(values) != len(columns):
            raise AccuracyInputError(
                f"map class {row!r} has {len(values)} count(s) but the header (line {header_line}) names "
                f"{len(columns)} reference class(es)",
                path=name,
                line=line,
            )
        counts.append(
            [_count(v, path=name, line=line, column=j + 2, row=row, ref=columns[j]) for j, v in enumerate(values)]
        )
        rows.append(row)
        lines.append(line)
    only_header = [c for c in columns if c not in row_line]
    only_rows = [r for r in rows if r not in set(columns)]
    if only_header or only_rows:
        parts = []
        if only_header:
            parts.append(f"reference class(es) {', '.join(map(repr, only_header))} in the header have no row")
        if only_rows:
            parts.append(f"map class(es) {', '.join(map(repr, only_rows))} are not in the header")
        raise AccuracyInputError(
            "; ".join(parts) + ": the matrix must be square, with the same classes as rows and columns (a class "
            "found only in the reference gets a row of zeros and area 0)",
            path=name,
            line=header_line,
        )
    matrix = np.asarray(counts, dtype=np.int64)
    order = [columns.index(r) for r in rows]
    return ConfusionTable(name, tuple(rows), tuple(rows), matrix[:, order], tuple(lines))


def read_areas(path: str | Path) -> tuple[dict[str, float], dict[str, int]]:
    """(class → area, class → line) of an AREAS.csv (columns ``class`` and ``area``)."""
    name = str(path)
    records = list(csv_records(Path(path)))
    if not records:
        raise AccuracyInputError("the file is empty: expected a header 'class,area'", path=name)
    header_line, header = records[0]
    lowered = [h.lower() for h in header]
    missing = [c for c in ("class", "area") if c not in lowered]
    if missing:
        raise AccuracyInputError(
            f"the header {','.join(header)!r} has no column {' or '.join(map(repr, missing))}: expected 'class,area'",
            path=name,
            line=header_line,
        )
    for column in ("class", "area"):
        if lowered.count(column) > 1:
            raise AccuracyInputError(f"the header has two {column!r} columns", path=name, line=header_line)
    ci, ai = lowered.index("class"), lowered.index("area")
    areas: dict[str, float] = {}
    lines: dict[str, int] = {}
    for line, cells in records[1:]:
        cells = cells + [""] * (len(header) - len(cells))
        if len(cells) > len(header):
            raise AccuracyInputError(
                f"{len(cells)} values but the header (line {header_line}) has {len(header)} columns",
                path=name,
                line=line,
            )
        cls, text = cells[ci], cells[ai]
        if not cls:
            raise AccuracyInputError("no class name in column 'class'", path=name, line=line)
        if cls in areas:
            raise AccuracyInputError(
                f"class {cls!r} appears twice (lines {lines[cls]} and {line})", path=name, line=line
            )
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            shown = "an empty cell" if text == "" else repr(text)
            raise AccuracyInputError(f"class {cls!r}: area {shown} is not a number", path=name, line=line)
        if value < 0:
            raise AccuracyInputError(f"class {cls!r}: negative area {text}", path=name, line=line)
        areas[cls] = value
        lines[cls] = line
    if not areas:
        raise AccuracyInputError("no class below the header", path=name, line=header_line)
    return areas, lines


def mapped_areas_for(table: ConfusionTable, areas: dict[str, float], areas_path: str) -> np.ndarray:
    """The areas of ``table.rows`` in order; ``AccuracyInputError`` naming classes only one file has."""
    missing = [r for r in table.rows if r not in areas]
    extra = [c for c in areas if c not in set(table.rows)]
    if missing or extra:
        parts = []
        if missing:
            rows = ", ".join(f"{r!r} (line {table.lines[table.rows.index(r)]})" for r in missing)
            parts.append(f"no area for class(es) {rows} of {table.path}")
        if extra:
            parts.append(f"class(es) {', '.join(map(repr, extra))} are not in {table.path}")
        raise AccuracyInputError("; ".join(parts), path=areas_path)
    return np.array([areas[r] for r in table.rows], dtype=np.float64)
