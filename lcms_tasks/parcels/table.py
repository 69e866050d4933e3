"""Reading a parcel time-series table into a (dates x parcels x bands) cube.

Paying agencies often have per-parcel extractions already: a table of parcel id,
date, band values and label. Two layouts are read:

* **long**: one row per parcel and date (``--time-column`` names the date column);
* **wide**: one row per parcel, one column per band and date (``B04_2022-05-01``).

Band columns are found by a regular expression with a named group ``band`` (for
example ``S2-L2A-(?P<band>B\\d[\\dA])``), searched in each column name; ``B2``,
``b02`` and ``B02`` all mean B02. In a wide table the expression also has a
named group ``date`` (``YYYY-MM-DD`` or ``YYYYMMDD``). Files: Parquet and
GeoParquet (only the needed columns are read; geometry is ignored) and CSV
(``.csv``, ``.csv.gz``, ``.tsv``), chosen by suffix.

No data: NaN/empty cells, infinite values, cells equal to a ``nodata`` value,
and a parcel without a row for a date. An observation (parcel, date) is valid
only when all kept bands are valid there; a band with no valid value in the
whole table (an extraction's empty column) is left out and reported, never a
reason to lose every observation. Each parcel carries one label: a parcel with
two different labels is an error, one without a label is unlabelled.

Every problem of the input is a :class:`ParcelTableError` (a ``ValueError``)
naming the file, the column and the record (row number and parcel id).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lcms_tasks.bands import S2_BANDS
from lcms_tasks.errors import LcmsError

#: Band columns of a long table: a Sentinel-2 band name (B01..B12, B8A) standing alone in the name.
DEFAULT_BAND_PATTERN = r"(?i)(?<![A-Za-z0-9])(?P<band>B(?:0?[1-9]|1[0-2]|8A))(?![A-Za-z0-9])"
#: Band-and-date columns of a wide table: ``B04_2022-05-01``, ``S2-L2A-B8A_20220501``, ...
DEFAULT_WIDE_PATTERN = (
    r"(?i)(?<![A-Za-z0-9])(?P<band>B(?:0?[1-9]|1[0-2]|8A))[_\-.:](?P<date>\d{4}-?\d{2}-?\d{2})(?![0-9])"
)

_PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")

Layout = Literal["auto", "long", "wide"]


class ParcelTableError(LcmsError, ValueError):
    """A parcel table cannot be read as one: the message names the file, the column and the record."""

    permanent = True

    def __init__(self, path: str | Path, problem: str, *, column: str | None = None, record: str | None = None):
        self.path = str(path)
        self.column = column
        self.record = record
        where = ", ".join(part for part in (f"column {column!r}" if column else None, record) if part)
        super().__init__(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


@dataclasses.dataclass
class ParcelTable:
    """Parcel time series on the table's own dates.

    ``values[t, p, b]`` is band ``bands[b]`` of parcel ``ids[p]`` at ``dates[t]`` as in the table
    (digital numbers or reflectance), NaN where there is no data.
    """

    path: str
    ids: np.ndarray  # (P,) the id column's values, sorted
    labels: np.ndarray | None  # (P,) object: str label, or None for an unlabelled parcel; None without a label column
    dates: np.ndarray  # (T,) datetime64[s], sorted, distinct
    bands: list[str]  # (B,) Sentinel-2 band names, in S2_BANDS order
    columns: dict[str, str]  # band -> source column (wide: band -> the column of its first date)
    values: np.ndarray  # (T, P, B) float32
    report: dict[str, Any]

    @property
    def valid(self) -> np.ndarray:
        """(T, P) bool: the observation has a value in every band."""
        return np.isfinite(self.values).all(axis=-1)

    def with_bands(self, bands: Sequence[str]) -> ParcelTable:
        """The same table restricted to ``bands`` (each must be present), e.g. a model's bands."""
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise ParcelTableError(self.path, f"band(s) {missing} missing (the table has {self.bands})")
        keep = [self.bands.index(b) for b in bands]
        return dataclasses.replace(
            self,
            bands=list(bands),
            columns={b: self.columns[b] for b in bands},
            values=np.ascontiguousarray(self.values[..., keep]),
        )


def normalise_band(raw: str) -> str | None:
    """``'b2'`` / ``'B02'`` -> ``'B02'``, ``'b8a'`` -> ``'B8A'``; None if it is not a Sentinel-2 band."""
    text = raw.strip().upper()
    if text == "B8A":
        return "B8A"
    match = re.fullmatch(r"B(\d{1,2})", text)
    if not match:
        return None
    name = f"B{int(match.group(1)):02d}"
    return name if name in S2_BANDS else None


def compile_band_pattern(pattern: str, *, wide: bool, path: str | Path = "--band-pattern") -> re.Pattern[str]:
    """The band pattern, checked for its named groups (``band``; ``date`` too for a wide table)."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ParcelTableError(path, f"band pattern {pattern!r} is not a regular expression: {err}") from err
    needed = ["band", "date"] if wide else ["band"]
    missing = [g for g in needed if g not in compiled.groupindex]
    if missing:
        layout = "a wide table" if wide else "the band columns"
        raise ParcelTableError(
            path, f"band pattern {pattern!r} needs the named group(s) {missing} for {layout}, e.g. (?P<band>B\\d[\\dA])"
        )
    return compiled


def table_columns(path: Path) -> list[str]:
    """Column names of a Parquet/GeoParquet or CSV file, without reading its rows."""
    kind = _file_kind(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        import pandas as pd

        return [str(c) for c in pd.read_csv(path, nrows=0, sep=_sep(path)).columns]
    except (OSError, ValueError) as err:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such parcel table") from err
        raise ParcelTableError(path, f"cannot be read as a {kind} table: {err}") from err


def _sep(path: Path) -> str:
    return "\t" if path.name.lower().endswith(".tsv") else ","


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    raise ParcelTableError(
        path, f"unknown table format; expected a file ending in {', '.join(_PARQUET_SUFFIXES + _CSV_SUFFIXES)}"
    )


def _read_columns(path: Path, columns: Sequence[str]) -> Any:
    import pandas as pd

    try:
        if _file_kind(path) == "parquet":
            return pd.read_parquet(path, columns=list(columns))
        return pd.read_csv(path, usecols=list(columns), sep=_sep(path))
    except (OSError, ValueError) as err:
        raise ParcelTableError(path, f"cannot read columns {list(columns)}: {err}") from err


def _record(row: int, parcel: object | None = None) -> str:
    return f"row {row}" + (f" (parcel {parcel!r})" if parcel is not None else "")


def _numeric(path: Path, frame: Any, column: str, ids: Any | None) -> np.ndarray:
    """A band column as float64; text that is not a number is an error naming the first such record."""
    import pandas as pd

    raw = frame[column]
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = numbers.isna().to_numpy() & raw.notna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        parcel = ids.iloc[row] if ids is not None else None
        raise ParcelTableError(
            path,
            f"value {raw.iloc[row]!r} is not a number ({int(bad.sum())} such value(s) in the column)",
            column=column,
            record=_record(row, parcel),
        )
    return numbers.to_numpy(dtype=np.float64)


def _parse_dates(path: Path, raw: Any, column: str, ids: Any | None) -> np.ndarray:
    """A date column (or the date parts of wide column names) as datetime64[s]; errors name the record."""
    import pandas as pd

    missing = raw.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ParcelTableError(
            path, "empty date", column=column, record=_record(row, ids.iloc[row] if ids is not None else None)
        )
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        text = raw.astype(str)
        compact = text.str.fullmatch(r"\d{8}")
        parsed = pd.to_datetime(text.where(~compact, text.str.slice(0, 4) + "-" + text.str.slice(4, 6) + "-"
                                            + text.str.slice(6, 8)), errors="coerce", format="mixed")  # fmt: skip
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ParcelTableError(
                path,
                f"{raw.iloc[row]!r} is not a date",
                column=column,
                record=_record(row, ids.iloc[row] if ids is not None else None),
            )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.to_numpy(dtype="datetime64[s]")


def _labels_per_parcel(path: Path, frame: Any, label_column: str, id_column: str, codes: np.ndarray, n: int) -> Any:
    """One label per parcel (str, or None when it has none); two labels for one parcel are an error."""
    import pandas as pd

    labels = frame[label_column]
    present = labels.notna().to_numpy()
    rows = pd.DataFrame({"code": codes[present], "label": labels[present].astype(str).to_numpy()})
    per_parcel = rows.groupby("code", sort=True)["label"]
    distinct = per_parcel.nunique()
    if (distinct > 1).any():
        code = int(distinct.index[np.flatnonzero(distinct.to_numpy() > 1)[0]])
        two = rows.loc[rows["code"] == code, "label"].unique()[:2]
        row = int(np.flatnonzero(codes == code)[0])
        raise ParcelTableError(
            path,
            f"parcel {frame[id_column].iloc[row]!r} has two labels, {two[0]!r} and {two[1]!r} "
            f"({int((distinct > 1).sum())} parcel(s) with more than one label)",
            column=label_column,
            record=_record(row),
        )
    out = np.full(n, None, dtype=object)
    first = per_parcel.first()
    out[first.index.to_numpy(dtype=np.int64)] = first.to_numpy(dtype=object)
    return out


def _match_bands(
    path: Path, columns: Sequence[str], pattern: re.Pattern[str], exclude: set[str]
) -> list[tuple[str, str, str | None]]:
    """(column, band, date text or None) of every column the pattern finds a band in."""
    found = []
    for column in columns:
        if column in exclude:
            continue
        match = pattern.search(column)
        if not match:
            continue
        band = normalise_band(match.group("band"))
        if band is None:
            raise ParcelTableError(
                path,
                f"the band pattern matches {match.group('band')!r}, which is not a Sentinel-2 band "
                f"({', '.join(S2_BANDS)})",
                column=column,
            )
        date = match.group("date") if "date" in pattern.groupindex else None
        found.append((column, band, date))
    if not found:
        raise ParcelTableError(
            path, f"no column matches the band pattern {pattern.pattern!r}; columns: {', '.join(columns)}"
        )
    return found


def _check_column(path: Path, columns: Sequence[str], column: str | None, option: str) -> None:
    if column is not None and column not in columns:
        raise ParcelTableError(path, f"{option} {column!r} is not a column; columns: {', '.join(columns)}")


def read_parcel_table(
    path: str | Path,
    *,
    id_column: str,
    time_column: str | None = None,
    label_column: str | None = None,
    band_pattern: str | None = None,
    nodata: Sequence[float] = (),
    layout: Layout = "auto",
    bands: Sequence[str] | None = None,
) -> ParcelTable:
    """Read a parcel table (see the module docstring).

    Args:
        path: Parquet / GeoParquet / CSV file.
        id_column: the parcel id column.
        time_column: the date column of a long table (``layout="auto"``: long if given, else wide).
        label_column: the label column (optional: a table to predict may have none).
        band_pattern: regular expression with a named group ``band`` (and ``date`` for a wide table);
            default :data:`DEFAULT_BAND_PATTERN` / :data:`DEFAULT_WIDE_PATTERN`.
        nodata: values meaning no data (besides NaN and empty cells), e.g. ``(65535,)``.
        layout: ``long``, ``wide`` or ``auto``.
        bands: keep only these bands (each must be found); default all the pattern finds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such parcel table")
    if layout == "auto":
        layout = "long" if time_column is not None else "wide"
    if layout == "long" and time_column is None:
        raise ParcelTableError(path, "a long table needs --time-column (the date of each row)")
    wide = layout == "wide"
    pattern = compile_band_pattern(band_pattern or (DEFAULT_WIDE_PATTERN if wide else DEFAULT_BAND_PATTERN), wide=wide)
    columns = table_columns(path)
    _check_column(path, columns, id_column, "--id-column")
    _check_column(path, columns, time_column if not wide else None, "--time-column")
    _check_column(path, columns, label_column, "--label-column")
    special = {c for c in (id_column, time_column, label_column) if c}
    matched = _match_bands(path, columns, pattern, special)
    if bands is not None:
        wanted = [normalise_band(b) or b for b in bands]
        unknown = [b for b in wanted if b not in S2_BANDS]
        if unknown:
            raise ParcelTableError(path, f"--bands lists {unknown}, not Sentinel-2 bands ({', '.join(S2_BANDS)})")
        absent = [b for b in wanted if b not in {band for _, band, _ in matched}]
        if absent:
            raise ParcelTableError(
                path, f"band(s) {absent} not found: no column matches the band pattern {pattern.pattern!r} with them"
            )
        matched = [m for m in matched if m[1] in wanted]
    needed = [c for c in (id_column, None if wide else time_column, label_column) if c] + [m[0] for m in matched]
    frame = _read_columns(path, needed)
    if wide:
        table = _wide(path, frame, id_column, label_column, matched)
    else:
        assert time_column is not None
        table = _long(path, frame, id_column, time_column, label_column, matched)
    return _finish(table, nodata, layout)


def _ids(path: Path, frame: Any, id_column: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes per row, sorted distinct ids); an empty id is an error naming the row."""
    import pandas as pd

    ids = frame[id_column]
    missing = ids.isna().to_numpy()
    if missing.any():
        raise ParcelTableError(
            path, "empty parcel id", column=id_column, record=_record(int(np.flatnonzero(missing)[0]))
        )
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _long(
    path: Path,
    frame: Any,
    id_column: str,
    time_column: str,
    label_column: str | None,
    matched: list[tuple[str, str, str | None]],
) -> ParcelTable:
    seen: dict[str, str] = {}
    for column, band, _ in matched:
        if band in seen:
            raise ParcelTableError(
                path, f"columns {seen[band]!r} and {column!r} both match band {band} of the band pattern", column=column
            )
        seen[band] = column
    if len(frame) == 0:
        raise ParcelTableError(path, "the table has no rows")
    codes, ids = _ids(path, frame, id_column)
    moments = _parse_dates(path, frame[time_column], time_column, frame[id_column])
    dates, t_codes = np.unique(moments, return_inverse=True)
    flat = t_codes * len(ids) + codes
    order = np.argsort(flat, kind="stable")
    repeated = np.flatnonzero(np.diff(flat[order]) == 0)
    if repeated.size:
        row = int(order[repeated[0] + 1])
        raise ParcelTableError(
            path,
            f"parcel {frame[id_column].iloc[row]!r} has {int(np.sum(flat == flat[row]))} rows for date "
            f"{np.datetime_as_string(moments[row], unit='D')} ({repeated.size} repeated parcel-date pair(s) in all)",
            column=time_column,
            record=_record(row),
        )
    bands = [b for b in S2_BANDS if b in seen]
    values = np.full((len(dates), len(ids), len(bands)), np.nan, dtype=np.float32)
    for b, band in enumerate(bands):
        values[t_codes, codes, b] = _numeric(path, frame, seen[band], frame[id_column])
    labels = (
        _labels_per_parcel(path, frame, label_column, id_column, codes, len(ids)) if label_column is not None else None
    )
    report = {"rows": len(frame)}
    return ParcelTable(str(path), ids, labels, dates, bands, {b: seen[b] for b in bands}, values, report)


def _wide(
    path: Path, frame: Any, id_column: str, label_column: str | None, matched: list[tuple[str, str, str | None]]
) -> ParcelTable:
    import pandas as pd

    if len(frame) == 0:
        raise ParcelTableError(path, "the table has no rows")
    codes, ids = _ids(path, frame, id_column)
    if len(ids) != len(frame):
        row = int(np.flatnonzero(frame[id_column].duplicated().to_numpy())[0])
        raise ParcelTableError(
            path,
            f"parcel {frame[id_column].iloc[row]!r} has {int(np.sum(codes == codes[row]))} rows; a wide table has one "
            "row per parcel (a long table needs --time-column)",
            column=id_column,
            record=_record(row),
        )
    names = pd.Series([d for _, _, d in matched], dtype=object)
    moments = _parse_dates(path, names, "(date in the column names)", None)
    cells: dict[tuple[str, np.datetime64], str] = {}
    for (column, band, _), moment in zip(matched, moments, strict=True):
        key = (band, moment)
        if key in cells:
            raise ParcelTableError(
                path,
                f"columns {cells[key]!r} and {column!r} both hold band {band} on "
                f"{np.datetime_as_string(moment, unit='D')}",
                column=column,
            )
        cells[key] = column
    dates = np.unique(moments)
    bands = [b for b in S2_BANDS if any(k[0] == b for k in cells)]
    values = np.full((len(dates), len(ids), len(bands)), np.nan, dtype=np.float32)
    date_index = {d: i for i, d in enumerate(dates)}
    columns: dict[str, str] = {}
    for (band, moment), column in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        values[date_index[moment], codes, bands.index(band)] = _numeric(path, frame, column, frame[id_column])
        columns.setdefault(band, column)
    labels = (
        _labels_per_parcel(path, frame, label_column, id_column, codes, len(ids)) if label_column is not None else None
    )
    return ParcelTable(str(path), ids, labels, dates, bands, columns, values, {"rows": len(frame)})


def _finish(table: ParcelTable, nodata: Sequence[float], layout: str) -> ParcelTable:
    """No-data values to NaN, empty bands left out, the report completed."""
    values = table.values
    with np.errstate(invalid="ignore"):
        for value in nodata:
            values[values == np.float32(value)] = np.nan
    values[~np.isfinite(values)] = np.nan
    # Share of parcel-date cells without data per band (a missing row counts as no data).
    no_data_share = {b: float(np.isnan(values[..., i]).mean()) for i, b in enumerate(table.bands)}
    empty = [b for i, b in enumerate(table.bands) if np.isnan(values[..., i]).all()]
    if len(empty) == len(table.bands):
        raise ParcelTableError(
            table.path,
            f"no band has a valid value (bands {', '.join(table.bands)}; no-data values {list(nodata) or 'none'})",
        )
    keep = [i for i, b in enumerate(table.bands) if b not in empty]
    table.values = np.ascontiguousarray(values[..., keep])
    table.bands = [table.bands[i] for i in keep]
    dropped = {b: f"column {table.columns[b]!r} has no valid value" for b in empty}
    table.columns = {b: table.columns[b] for b in table.bands}
    valid = table.valid
    table.report.update(
        path=table.path,
        layout=layout,
        n_parcels=len(table.ids),
        n_dates=len(table.dates),
        dates=[str(np.datetime_as_string(d, unit="D")) for d in table.dates],
        bands=dict(table.columns),
        bands_dropped=dropped,
        no_data_share={b: round(s, 4) for b, s in no_data_share.items()},
        valid_observation_share=round(float(valid.mean()), 4) if valid.size else 0.0,
        parcels_without_valid_observation=int((~valid.any(axis=0)).sum()),
    )
    return table
