"""Reading parcel time-series tables (lcms_tasks.parcels.table): layouts, band patterns, no data, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcms_tasks.parcels.table import ParcelTableError, normalise_band, read_parcel_table

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
DATES = pd.to_datetime(["2022-03-01", "2022-04-01", "2022-05-01", "2022-06-01"])


def long_frame(n_parcels: int = 3, seed: int = 0, prefix: str = "S2-L2A-") -> pd.DataFrame:
    """One row per parcel and date, DN values, label per parcel, extra non-band columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_parcels):
        for d in DATES:
            row = {"parcel": f"p{p}", "date": d, "crop": f"c{p % 2}", "S1-SIGMA0-VH": 1800, "elevation": 64}
            row.update({f"{prefix}{b}": int(rng.integers(200, 4000)) for b in BANDS})
            rows.append(row)
    return pd.DataFrame(rows)


def read_long(path: Path, **kw: object) -> object:
    options: dict[str, object] = {"id_column": "parcel", "time_column": "date", "label_column": "crop"}
    options.update(kw)
    return read_parcel_table(path, **options)  # type: ignore[arg-type]


def test_long_table_cube_and_report(tmp_path: Path) -> None:
    frame = long_frame()
    path = tmp_path / "parcels.parquet"
    frame.to_parquet(path)
    table = read_long(path)
    assert table.bands == BANDS and list(table.ids) == ["p0", "p1", "p2"]
    assert table.values.shape == (4, 3, 9) and table.values.dtype == np.float32
    assert list(table.labels) == ["c0", "c1", "c0"]
    assert table.columns["B08"] == "S2-L2A-B08"
    # Cell by cell: the cube holds the table's values (p1 at the third date, B11).
    row = frame[(frame.parcel == "p1") & (frame.date == DATES[2])].iloc[0]
    assert table.values[2, 1, BANDS.index("B11")] == row["S2-L2A-B11"]
    assert table.valid.all()
    assert table.report["n_dates"] == 4 and table.report["rows"] == 12 and table.report["bands_dropped"] == {}


def test_rows_in_any_order_and_csv_give_the_same_cube(tmp_path: Path) -> None:
    frame = long_frame(seed=3)
    frame.to_parquet(tmp_path / "a.parquet")
    frame.sample(frac=1.0, random_state=1).to_csv(tmp_path / "b.csv", index=False)
    a, b = read_long(tmp_path / "a.parquet"), read_long(tmp_path / "b.csv")
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.dates, b.dates)


def test_wide_table_matches_long(tmp_path: Path) -> None:
    frame = long_frame(seed=5, prefix="")
    long_path = tmp_path / "long.parquet"
    frame.to_parquet(long_path)
    wide = frame.pivot(index="parcel", columns="date", values=BANDS)
    wide.columns = [f"{band}_{date:%Y%m%d}" for band, date in wide.columns]
    wide = wide.reset_index()
    wide["crop"] = ["c0", "c1", "c0"]
    wide_path = tmp_path / "wide.csv"
    wide.to_csv(wide_path, index=False)
    a = read_long(long_path)
    b = read_parcel_table(wide_path, id_column="parcel", label_column="crop")  # no time column: wide
    assert b.report["layout"] == "wide" and b.bands == a.bands
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.dates, b.dates)
    assert list(b.labels) == list(a.labels)


def test_band_pattern_maps_columns_and_normalises_names(tmp_path: Path) -> None:
    frame = long_frame()
    # Short band names ("B2") and a lower-case one; a look-alike column the pattern must not take.
    frame = frame.rename(columns={"S2-L2A-B02": "refl_B2", "S2-L2A-B03": "refl_b3", "S2-L2A-B04": "refl_B04"})
    frame["quality_B08_flag"] = 1
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    table = read_long(path, band_pattern=r"^refl_(?P<band>[Bb]\d{1,2}A?)$")
    assert table.bands == ["B02", "B03", "B04"]
    assert table.columns == {"B02": "refl_B2", "B03": "refl_b3", "B04": "refl_B04"}
    assert normalise_band("b8a") == "B8A" and normalise_band("B8") == "B08" and normalise_band("B13") is None


def test_no_data_months_missing_rows_and_a_parcel_without_any_valid_month(tmp_path: Path) -> None:
    frame = long_frame(n_parcels=4)
    b04 = "S2-L2A-B04"
    frame.loc[(frame.parcel == "p0") & (frame.date == DATES[1]), b04] = 65535  # one cloudy month
    frame.loc[frame.parcel == "p3", b04] = 65535  # never a valid month
    frame = frame[~((frame.parcel == "p1") & (frame.date == DATES[3]))]  # no row at all for the last month
    frame.loc[(frame.parcel == "p2") & (frame.date == DATES[0]), "S2-L2A-B12"] = np.nan
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    table = read_long(path, nodata=[65535])
    valid = table.valid
    assert not valid[1, 0] and valid[[0, 2, 3], 0].all()
    assert not valid[3, 1] and np.isnan(table.values[3, 1]).all()
    assert not valid[0, 2]
    assert not valid[:, 3].any()
    assert table.report["parcels_without_valid_observation"] == 1
    assert table.report["valid_observation_share"] == pytest.approx(1 - 7 / 16)
    assert table.report["no_data_share"]["B04"] == pytest.approx(6 / 16)


def test_an_empty_band_column_is_left_out_and_reported(tmp_path: Path) -> None:
    frame = long_frame()
    frame["S2-L2A-B8A"] = 65535  # the WorldCereal extraction's case: a band without any value
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    table = read_long(path, nodata=[65535])
    assert "B8A" not in table.bands and table.valid.all()
    assert table.report["bands_dropped"] == {"B8A": "column 'S2-L2A-B8A' has no valid value"}
    # Asked for explicitly, only the listed bands are read.
    assert read_long(path, nodata=[65535], bands=["B04", "B08"]).bands == ["B04", "B08"]


def test_missing_band_asked_for_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    long_frame().to_parquet(path)
    with pytest.raises(ParcelTableError, match=r"band\(s\) \['B8A'\] not found"):
        read_long(path, bands=["B04", "B8A"])


def _error(path: Path, *, names: str | None = None, **kw: object) -> str:
    """The message of reading ``path``, which names the file first (or the option at fault, ``names``)."""
    with pytest.raises(ParcelTableError) as info:
        read_long(path, **kw)
    message = str(info.value)
    assert message.startswith(names or str(path)), message
    return message


def test_bad_input_errors_name_file_column_and_record(tmp_path: Path) -> None:
    base = long_frame()
    path = tmp_path / "bad.csv"

    base.to_csv(path, index=False)
    assert "--id-column 'plot'" in _error(path, id_column="plot") and "columns: parcel, date" in _error(
        path, id_column="plot"
    )
    assert "--label-column 'crop_code' is not a column" in _error(path, label_column="crop_code")

    frame = base.copy()
    frame["S2-L2A-B05"] = frame["S2-L2A-B05"].astype(object)
    frame.loc[5, "S2-L2A-B05"] = "cloud"
    frame.to_csv(path, index=False)
    message = _error(path)
    assert (
        "column 'S2-L2A-B05'" in message and "row 5 (parcel 'p1')" in message and "'cloud' is not a number" in message
    )

    frame = base.copy()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    frame.loc[7, "date"] = "2022-13-45"
    frame.to_csv(path, index=False)
    message = _error(path)
    assert "column 'date'" in message and "row 7 (parcel 'p1')" in message and "not a date" in message

    pd.concat([base, base.iloc[[4]]]).to_csv(path, index=False)
    message = _error(path)
    assert "parcel 'p1' has 2 rows for date 2022-03-01" in message

    frame = base.copy()
    frame.loc[9, "crop"] = "c9"
    frame.to_csv(path, index=False)
    message = _error(path)
    assert "column 'crop'" in message and "parcel 'p2' has two labels" in message

    frame = base.copy()
    frame.loc[2, "parcel"] = None
    frame.to_csv(path, index=False)
    assert "column 'parcel', row 2: empty parcel id" in _error(path)

    base.to_csv(path, index=False)
    assert "needs the named group(s) ['band']" in _error(path, names="--band-pattern", band_pattern=r"S2-L2A-B\d\d")
    assert "not a regular expression" in _error(path, names="--band-pattern", band_pattern=r"(?P<band>B\d")
    assert "no column matches the band pattern" in _error(path, band_pattern=r"(?P<band>X\d\d)")

    base.assign(**{"S2-L2A-B13": 1}).to_csv(path, index=False)
    message = _error(path, band_pattern=r"S2-L2A-(?P<band>B\d\d)")
    assert "column 'S2-L2A-B13'" in message and "'B13', which is not a Sentinel-2 band" in message


def test_wide_table_with_two_rows_for_a_parcel_is_an_error(tmp_path: Path) -> None:
    wide = pd.DataFrame({"parcel": ["a", "b", "a"], "B04_2022-05-01": [1, 2, 3], "B08_2022-05-01": [4, 5, 6]})
    path = tmp_path / "wide.csv"
    wide.to_csv(path, index=False)
    with pytest.raises(ParcelTableError, match=r"column 'parcel', row 2: parcel 'a' has 2 rows; a wide table"):
        read_parcel_table(path, id_column="parcel")


def test_wide_pattern_needs_a_date_group_and_files_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    long_frame().to_csv(path, index=False)
    with pytest.raises(ParcelTableError, match=r"needs the named group\(s\) \['date'\] for a wide table"):
        read_parcel_table(path, id_column="parcel", band_pattern=r"S2-L2A-(?P<band>B\d[\dA])")
    with pytest.raises(FileNotFoundError, match="no such parcel table"):
        read_parcel_table(tmp_path / "absent.parquet", id_column="parcel", time_column="date")
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(ParcelTableError, match="unknown table format"):
        read_parcel_table(tmp_path / "p.xlsx", id_column="parcel", time_column="date")
    frame = long_frame()
    for b in BANDS:
        frame[f"S2-L2A-{b}"] = 65535
    frame.to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ParcelTableError, match="no band has a valid value"):
        read_parcel_table(tmp_path / "empty.parquet", id_column="parcel", time_column="date", nodata=[65535])
