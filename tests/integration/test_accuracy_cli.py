"""``lcms accuracy area`` as a user runs it: the installed console script, files in, JSON out, exit codes.

The worked example is Olofsson et al. (2014)'s (see tests/unit/test_accuracy_estimators.py for the
arithmetic); every kind of bad input exits with status 2 and one line naming the file, the line and
the problem.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LCMS = str(Path(sys.executable).with_name("lcms"))

CONFUSION = """\
map \\ reference,Deforestation,Forest gain,Stable forest,Stable non-forest
Deforestation,66,0,5,4
Forest gain,0,55,8,12
Stable forest,1,0,153,11
Stable non-forest,2,1,9,313
"""
AREAS = """\
class,area
Deforestation,18000
Forest gain,13500
Stable forest,288000
Stable non-forest,580500
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LCMS, "accuracy", *args], capture_output=True, text=True, timeout=120, check=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def area(
    tmp_path: Path, confusion: str = CONFUSION, areas: str = AREAS, *extra: str
) -> subprocess.CompletedProcess[str]:
    c = write(tmp_path / "CONFUSION.csv", confusion)
    a = write(tmp_path / "AREAS.csv", areas)
    return run("area", "--confusion", str(c), "--mapped-area", str(a), *extra)


def test_area_reproduces_the_olofsson_2014_example_in_hectares(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = area(tmp_path, CONFUSION, AREAS, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == printed
    assert printed["overall_accuracy"] == pytest.approx(0.9465119, abs=1e-7)
    assert printed["overall_accuracy_se"] == pytest.approx(0.009430, abs=1e-6)
    assert printed["users_accuracy"]["Deforestation"] == pytest.approx(0.88)
    assert printed["producers_accuracy"]["Deforestation"] == pytest.approx(0.748661, abs=1e-6)
    assert printed["area"]["Deforestation"] == pytest.approx(21_157.76, abs=0.01)  # ha, the unit of AREAS.csv
    assert printed["area_ci95"]["Deforestation"] == pytest.approx(6_157.6, abs=0.1)
    assert printed["area_se"]["Deforestation"] == pytest.approx(3_141.65, abs=0.1)
    assert sum(printed["area"].values()) == pytest.approx(900_000)
    assert set(printed["producers_accuracy"]) == {"Deforestation", "Forest gain", "Stable forest", "Stable non-forest"}
    assert printed["n_map"]["Stable forest"] == 165
    assert printed["notes"] == []


def test_area_reorders_columns_reads_a_bom_and_extra_area_columns(tmp_path: Path) -> None:
    confusion = "\ufeffmap,b,a\n\na,3,7\nb,9,1\n"  # header in another order, a blank line, a byte-order mark
    areas = "area,class,note\n30,a,x\n70,b,y\n"
    proc = area(tmp_path, confusion, areas)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["classes"] == ["a", "b"]
    # a: 7 of 10 correct, b: 9 of 10; O = 0.3·0.7 + 0.7·0.9 = 0.84
    assert result["users_accuracy"] == {"a": pytest.approx(0.7), "b": pytest.approx(0.9)}
    assert result["overall_accuracy"] == pytest.approx(0.84)
    # area of a = 100 · (0.3·0.7 + 0.7·0.1) = 28
    assert result["area"]["a"] == pytest.approx(28.0)


def test_a_one_unit_stratum_gives_null_standard_errors_and_says_why(tmp_path: Path) -> None:
    proc = area(tmp_path, "m,a,b\na,8,2\nb,0,1\n", "class,area\na,10\nb,5\n")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["users_accuracy_se"]["b"] is None and result["overall_accuracy_se"] is None
    assert result["users_accuracy_se"]["a"] == pytest.approx((0.8 * 0.2 / 9) ** 0.5)
    assert any("stratum 'b' has 1 sample unit" in note for note in result["notes"])
    assert "stratum 'b' has 1 sample unit" in proc.stderr  # logged as a warning too


BAD_CONFUSION = [
    ("m,a,b\na,3,x\nb,1,2\n", r"line 2: column 3 (map class 'a', reference class 'b'): 'x' is not a count"),
    ("m,a,b\na,3,1\nb,-1,2\n", r"line 3: column 2 (map class 'b', reference class 'a'): negative count -1"),
    ("m,a,b\na,3,1.5\nb,1,2\n", r"line 2: column 3 (map class 'a', reference class 'b'): 1.5 is not a whole"),
    ("m,a,b\na,3,\nb,1,2\n", r"line 2: column 3 (map class 'a', reference class 'b'): an empty cell is not"),
    ("m,a,b\na,3,1\nb,1,2\na,4,4\n", r"CONFUSION.csv: line 4: map class 'a' appears twice (lines 2 and 4)"),
    ("m,a,a\na,3,1\nb,1,2\n", r"CONFUSION.csv: line 1: header: class 'a' appears twice (columns 2 and 3)"),
    ("m,a,b,c\na,3,1,0\nb,1,2,0\n", r"CONFUSION.csv: line 1: reference class(es) 'c' in the header have no row"),
    ("m,a,b\na,3,1\nb,1,2\nc,0,1\n", r"CONFUSION.csv: line 1: map class(es) 'c' are not in the header"),
    ("m,a,b\na,3,1\nb,1,2,4\n", r"CONFUSION.csv: line 3: map class 'b' has 3 count(s) but the header (line 1) names 2"),
    ("", r"CONFUSION.csv: the file is empty: expected a header row of reference classes"),
    ("\n\n", r"CONFUSION.csv: the file is empty"),
    ("m,a,b\n", r"CONFUSION.csv: line 1: no row of counts below the header"),
    ("map class\na\n", r"CONFUSION.csv: line 1: the header names no reference class"),
    ("m,a,\na,1,2\n", r"CONFUSION.csv: line 1: header: column 3 has no class name"),
    ("m,a,b\n,3,1\nb,1,2\n", r"CONFUSION.csv: line 2: the row has no map class name in its first column"),
    ("m,a,b\na,3,1\nb,0,0\n", r"CONFUSION.csv: line 3: map class 'b' has no sample unit (a row of zeros)"),
]


@pytest.mark.parametrize(("confusion", "message"), BAD_CONFUSION)
def test_bad_confusion_files_exit_2_with_one_line(tmp_path: Path, confusion: str, message: str) -> None:
    proc = area(tmp_path, confusion, "class,area\na,10\nb,5\n")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {tmp_path / 'CONFUSION.csv'}: ")
    assert message in lines[0], lines[0]


BAD_AREAS = [
    ("class,area\na,10\n", r"AREAS.csv: no area for class(es) 'b' (line 3) of"),
    ("class,area\na,10\nb,5\nc,1\n", r"AREAS.csv: class(es) 'c' are not in"),
    ("class,area\na,10\nb,5\na,3\n", r"AREAS.csv: line 4: class 'a' appears twice (lines 2 and 4)"),
    ("name,size\na,10\nb,5\n", r"AREAS.csv: line 1: the header 'name,size' has no column 'class' or 'area'"),
    ("class,hectares\na,10\nb,5\n", r"AREAS.csv: line 1: the header 'class,hectares' has no column 'area'"),
    ("class,area\na,ten\nb,5\n", r"AREAS.csv: line 2: class 'a': area 'ten' is not a number"),
    ("class,area\na,10\nb,\n", r"AREAS.csv: line 3: class 'b': area an empty cell is not a number"),
    ("class,area\na,-10\nb,5\n", r"AREAS.csv: line 2: class 'a': negative area -10"),
    ("class,area\na,10\nb,5,7\n", r"AREAS.csv: line 3: 3 values but the header (line 1) has 2 columns"),
    ("", r"AREAS.csv: the file is empty: expected a header 'class,area'"),
    ("class,area\n", r"AREAS.csv: line 1: no class below the header"),
    ("class,area\na,10\nb,0\n", r"AREAS.csv: line 3: class 'b' has mapped area 0 but 3 sample unit(s)"),
]


@pytest.mark.parametrize(("areas", "message"), BAD_AREAS)
def test_bad_area_files_exit_2_with_one_line(tmp_path: Path, areas: str, message: str) -> None:
    proc = area(tmp_path, "m,a,b\na,3,1\nb,1,2\n", areas)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_missing_files_and_folders_exit_2(tmp_path: Path) -> None:
    a = write(tmp_path / "AREAS.csv", AREAS)
    proc = run("area", "--confusion", str(tmp_path / "nope.csv"), "--mapped-area", str(a))
    assert proc.returncode == 2 and f"error: {tmp_path / 'nope.csv'}: no such file" in proc.stderr
    proc = run("area", "--confusion", str(tmp_path), "--mapped-area", str(a))
    assert proc.returncode == 2 and "is a directory, not a CSV file" in proc.stderr
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00m,a\x00")
    proc = run("area", "--confusion", str(binary), "--mapped-area", str(a))
    assert proc.returncode == 2 and "not a UTF-8 text file" in proc.stderr


def test_usage_errors_exit_2() -> None:
    proc = run("area", "--confusion", "x.csv")
    assert proc.returncode == 2 and "--mapped-area" in proc.stderr
