"""Crosswalk files: a source's class codes -> legend classes, optionally scoped per source and year.

A crosswalk is a CSV with a header holding at least ``code`` and ``class`` (a legend class
name or id; ``0`` means "no label on purpose", e.g. hedges and ditches in a crop parcel
file). Optional ``year`` and ``source`` columns restrict a row to one year and/or one source
(the source type such as ``lpis`` or the source file's stem); blank means "any". Other
columns (``name``, ``hcat3_code``...) are documentation and are ignored. A YAML file holding
a ``{code: class}`` mapping is accepted as well (read with every scalar as text, so ``005``
keeps its leading zeros).

Codes are compared as text after :func:`normalise_code`: ``3``, ``"3"``, ``"3.0"`` and
``3.0`` are the same code, ``"005"`` keeps its leading zeros (and differs from ``"5"``).
When several rows match a record, the most specific wins (source and year > year >
source > unscoped).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ConfigError
from lcms_tasks.reference.sources import NULL_CODE, code_key

if TYPE_CHECKING:
    from lcms_tasks.config import LegendClass

_INTEGRAL_TEXT = re.compile(r"^([+-]?\d+)\.0*$")
NO_LABEL = 0


def normalise_code(value: Any) -> str:
    """A code as comparable text: numbers and numeric text without a zero fraction; leading zeros kept.

    ``None``/NaN/blank give :data:`~lcms_tasks.reference.sources.NULL_CODE`.
    """
    key = code_key(value)
    match = _INTEGRAL_TEXT.match(key)
    return match.group(1) if match else key


@dataclass(frozen=True)
class CrosswalkRow:
    """One row of a crosswalk file (class as written; ids resolved later against a legend)."""

    code: str
    cls: str
    year: int | None
    source: str | None
    line: int


@dataclass(frozen=True)
class ResolvedClass:
    """A legend class a code maps to (id 0 = no label on purpose)."""

    id: int
    name: str


class Crosswalk:
    """A parsed crosswalk file: rows by code, resolved to legend classes by :meth:`resolve`."""

    def __init__(self, path: Path, rows: Sequence[CrosswalkRow]) -> None:
        self.path = path
        self.rows = list(rows)
        self._by_code: dict[str, list[CrosswalkRow]] = {}
        seen: dict[tuple[str, int | None, str | None], CrosswalkRow] = {}
        for row in self.rows:
            scope = (row.code, row.year, row.source)
            if scope in seen and seen[scope].cls != row.cls:
                first = seen[scope]
                raise ConfigError(
                    f"crosswalk file {path} line {row.line}: code {row.code!r} is mapped to {row.cls!r}, "
                    f"but line {first.line} maps it to {first.cls!r} (same year/source scope)"
                )
            seen[scope] = row
            self._by_code.setdefault(row.code, []).append(row)
        self._classes: dict[str, ResolvedClass] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def codes(self) -> set[str]:
        """Every code the crosswalk lists (in any scope)."""
        return set(self._by_code)

    def resolve(self, legend: Sequence[LegendClass] | None, *, legend_name: str = "legend") -> None:
        """Check every class against ``legend`` and fix the class id of each.

        With a legend, ``ConfigError`` lists every unknown class with its file line(s).
        Without one, numeric classes are ids (named by their text) and class names get ids
        1, 2, ... in alphabetical order (a warning-worthy fallback; pass a project config).
        """
        values = sorted({r.cls for r in self.rows})
        classes: dict[str, ResolvedClass] = {}
        if legend is not None:
            by_id = {c.id: c.name for c in legend}
            by_name = {c.name.lower(): (c.id, c.name) for c in legend}
            unknown: dict[str, list[int]] = {}
            for value in values:
                text = value.strip()
                if text.lstrip("+-").isdigit():
                    cid = int(text)
                    if cid == NO_LABEL:
                        classes[value] = ResolvedClass(NO_LABEL, "")
                    elif cid in by_id:
                        classes[value] = ResolvedClass(cid, by_id[cid])
                    else:
                        unknown[value] = [r.line for r in self.rows if r.cls == value]
                elif text.lower() in by_name:
                    cid, name = by_name[text.lower()]
                    classes[value] = ResolvedClass(cid, name)
                else:
                    unknown[value] = [r.line for r in self.rows if r.cls == value]
            if unknown:
                listed = "; ".join(f"{k!r} (line {', '.join(map(str, v[:5]))})" for k, v in sorted(unknown.items()))
                raise ConfigError(
                    f"crosswalk file {self.path}: class(es) not in the {legend_name} legend: {listed}; "
                    f"the legend has {', '.join(f'{c.id} {c.name}' for c in legend)} (0 = no label)"
                )
        else:
            names = [v for v in values if not v.strip().lstrip("+-").isdigit()]
            name_ids = {name: i + 1 for i, name in enumerate(sorted(names))}
            for value in values:
                text = value.strip()
                if text.lstrip("+-").isdigit():
                    cid = int(text)
                    if not 0 <= cid <= 254:
                        raise ConfigError(f"crosswalk file {self.path}: class id {cid} is outside 0..254")
                    classes[value] = ResolvedClass(cid, "" if cid == NO_LABEL else text)
                else:
                    classes[value] = ResolvedClass(name_ids[value], text)
        self._classes = classes

    def lookup(self, code: str, *, year: int | None = None, source: Sequence[str] = ()) -> ResolvedClass | None:
        """The class of normalised ``code`` for a record of ``year`` from a source known by ``source`` names.

        None when no row matches (an unknown code). Call :meth:`resolve` first.
        """
        if not self._classes and self.rows:
            raise RuntimeError("Crosswalk.resolve() must be called before lookup()")
        best: CrosswalkRow | None = None
        best_rank = -1
        wanted = {s.lower() for s in source}
        for row in self._by_code.get(code, ()):
            if row.year is not None and row.year != year:
                continue
            if row.source is not None and row.source.lower() not in wanted:
                continue
            rank = (2 if row.year is not None else 0) + (1 if row.source is not None else 0)
            if rank > best_rank:
                best, best_rank = row, rank
        return None if best is None else self._classes[best.cls]


def _year_cell(value: str, path: Path, line: int) -> int | None:
    text = value.strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ConfigError(f"crosswalk file {path} line {line}: year {value!r} is not a year") from None


def _read_csv(path: Path) -> list[CrosswalkRow]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        first = fh.readline()
        fh.seek(0)
        # The delimiter is the header's: ',' unless the header only has ';' or tabs (spreadsheet exports).
        delimiter = "," if "," in first else ";" if ";" in first else "\t" if "\t" in first else ","
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"crosswalk file {path} is empty (expected a header with columns code,class)")
        columns = [h.strip().lower() for h in header]
        missing = [c for c in ("code", "class") if c not in columns]
        if missing:
            raise ConfigError(
                f"crosswalk file {path} has no column(s) {', '.join(missing)}; its header is {header} "
                "(needs at least 'code' and 'class'; optional 'year', 'source')"
            )
        idx = {name: columns.index(name) for name in ("code", "class", "year", "source") if name in columns}
        rows: list[CrosswalkRow] = []
        for line, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) < len(columns):
                cells = cells + [""] * (len(columns) - len(cells))

            def cell(name: str, cells: list[str] = cells) -> str:
                return cells[idx[name]] if name in idx else ""

            code = normalise_code(cell("code"))
            if code == NULL_CODE:
                raise ConfigError(f"crosswalk file {path} line {line}: empty code")
            cls = cell("class").strip()
            if not cls:
                raise ConfigError(f"crosswalk file {path} line {line}: code {code!r} has an empty class")
            source = cell("source").strip() or None
            rows.append(CrosswalkRow(code, cls, _year_cell(cell("year"), path, line), source, line))
    return rows


def _read_yaml(path: Path) -> list[CrosswalkRow]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            node = yaml.compose(fh, Loader=yaml.BaseLoader)  # every scalar stays text: 005 keeps its zeros
    except yaml.YAMLError as err:
        raise ConfigError(f"crosswalk file {path} is not valid YAML: {err}") from err
    if node is None or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"crosswalk file {path} must be a YAML mapping {{code: class}}")
    rows: list[CrosswalkRow] = []
    for key, value in node.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode) or not isinstance(value, yaml.ScalarNode):
            raise ConfigError(f"crosswalk file {path} line {line}: expected 'code: class' with plain values")
        code = normalise_code(key.value)
        if code == NULL_CODE or not str(value.value).strip():
            raise ConfigError(f"crosswalk file {path} line {line}: empty code or class")
        rows.append(CrosswalkRow(code, str(value.value).strip(), None, None, line))
    return rows


def read_crosswalk(path: Path | str) -> Crosswalk:
    """Parse a crosswalk CSV (``code,class[,year][,source]``) or YAML (``{code: class}``) file.

    ``ConfigError`` names the file (and line) when it is missing, empty, lacks the columns,
    or maps one code twice in the same scope.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"crosswalk file {p} does not exist")
    if p.suffix.lower() in (".yaml", ".yml"):
        rows = _read_yaml(p)
    else:
        try:
            rows = _read_csv(p)
        except UnicodeDecodeError as err:
            raise ConfigError(f"crosswalk file {p} is not UTF-8 text: {err}") from err
    if not rows:
        raise ConfigError(f"crosswalk file {p} has no rows")
    return Crosswalk(p, rows)


# -- derived crosswalks ----------------------------------------------------------------------------


def derive_crosswalk_rows(
    code_table: Path,
    *,
    code_column: str,
    via_column: str,
    via: Crosswalk,
    keep_columns: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Chain two mappings: a code table (national code -> intermediate code, e.g. EuroCrops HCAT3)
    and a crosswalk of the intermediate codes -> class.

    Returns rows ``{code, class, <via_column>, <keep_columns>...}`` in the table's order; national
    codes whose intermediate code the crosswalk lacks get no row (they stay unknown on ingestion).
    """
    with open(code_table, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        for col in (code_column, via_column, *keep_columns):
            if col not in header:
                raise ConfigError(f"code table {code_table} has no column {col!r}; columns: {header}")
        out: list[dict[str, str]] = []
        seen: set[str] = set()
        for row in reader:
            code = normalise_code(row[code_column])
            target = via.lookup(normalise_code(row[via_column]))
            if code == NULL_CODE or code in seen or target is None:
                continue
            seen.add(code)
            out.append(
                {
                    "code": code,
                    "class": target.name or "0",
                    via_column: normalise_code(row[via_column]),
                    **{c: (row[c] or "").strip() for c in keep_columns},
                }
            )
    return out
