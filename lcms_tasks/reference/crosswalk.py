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

Other column names: a national code table such as EuroCrops' (``original_code`` ->
``HCAT3_code``) is read with ``code_column`` / ``target_column`` (:class:`CrosswalkSpec`);
rows with an empty code (EuroCrops lists the second crop of a mixed declaration on a row of
its own) are skipped and their lines kept in :attr:`Crosswalk.skipped_lines`.

Chains (:class:`CrosswalkChain`): crosswalks applied in order, e.g. national code -> HCAT3
code -> legend class. Every step but the last maps a code to another code (text, compared
after :func:`normalise_code`); only the last step's targets are legend classes. A code
unknown at any step is unknown; :meth:`CrosswalkChain.trace` says at which step.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ConfigError
from lcms_tasks.reference.sources import NULL_CODE, code_key

if TYPE_CHECKING:
    from lcms_tasks.config import LegendClass

log = logging.getLogger(__name__)
_INTEGRAL_TEXT = re.compile(r"^([+-]?\d+)\.0*$")
NO_LABEL = 0
DEFAULT_CODE_COLUMN = "code"
DEFAULT_TARGET_COLUMN = "class"


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


@dataclass(frozen=True)
class CrosswalkSpec:
    """One crosswalk file and the columns holding its codes and their targets (class, or the next step's code)."""

    path: Path
    code_column: str = DEFAULT_CODE_COLUMN
    target_column: str = DEFAULT_TARGET_COLUMN

    def describe(self) -> str:
        """``path`` alone for the default columns, else ``path [code -> target]``."""
        if (self.code_column, self.target_column) == (DEFAULT_CODE_COLUMN, DEFAULT_TARGET_COLUMN):
            return str(self.path)
        return f"{self.path} [{self.code_column} -> {self.target_column}]"


class Crosswalk:
    """A parsed crosswalk file: rows by code, resolved to legend classes by :meth:`resolve`."""

    def __init__(
        self,
        path: Path,
        rows: Sequence[CrosswalkRow],
        *,
        code_column: str = DEFAULT_CODE_COLUMN,
        target_column: str = DEFAULT_TARGET_COLUMN,
        skipped_lines: Sequence[int] = (),
    ) -> None:
        self.path = path
        self.rows = list(rows)
        self.code_column = code_column
        self.target_column = target_column
        self.skipped_lines = list(skipped_lines)
        self._by_code: dict[str, list[CrosswalkRow]] = {}
        seen: dict[tuple[str, int | None, str | None], CrosswalkRow] = {}
        for row in self.rows:
            scope = (row.code, row.year, row.source)
            if scope in seen and seen[scope].cls != row.cls:
                first = seen[scope]
                raise ConfigError(
                    f"crosswalk file {path} line {row.line}: code {row.code!r} is mapped to {row.cls!r}, "
                    f"but line {first.line} maps it to {first.cls!r} (same year/source scope; "
                    f"columns {code_column!r} -> {target_column!r})"
                )
            seen[scope] = row
            self._by_code.setdefault(row.code, []).append(row)
        self._classes: dict[str, ResolvedClass] = {}

    @property
    def spec(self) -> CrosswalkSpec:
        """The file and columns this crosswalk was read from."""
        return CrosswalkSpec(self.path, self.code_column, self.target_column)

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

    def _best_row(self, code: str, year: int | None, source: Sequence[str]) -> CrosswalkRow | None:
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
        return best

    def target(self, code: str, *, year: int | None = None, source: Sequence[str] = ()) -> str | None:
        """The target of normalised ``code`` as a normalised code (for an intermediate chain step), or None."""
        best = self._best_row(code, year, source)
        return None if best is None else normalise_code(best.cls)

    def lookup(self, code: str, *, year: int | None = None, source: Sequence[str] = ()) -> ResolvedClass | None:
        """The class of normalised ``code`` for a record of ``year`` from a source known by ``source`` names.

        None when no row matches (an unknown code). Call :meth:`resolve` first.
        """
        if not self._classes and self.rows:
            raise RuntimeError("Crosswalk.resolve() must be called before lookup()")
        best = self._best_row(code, year, source)
        return None if best is None else self._classes[best.cls]


def _year_cell(value: str, path: Path, line: int) -> int | None:
    text = value.strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ConfigError(f"crosswalk file {path} line {line}: year {value!r} is not a year") from None


def _delimiter(first_line: str) -> str:
    """The header's delimiter: ',' unless the header only has ';' or tabs (spreadsheet exports)."""
    return "," if "," in first_line else ";" if ";" in first_line else "\t" if "\t" in first_line else ","


def read_header(path: Path) -> list[str]:
    """The column names of a crosswalk CSV (its first line only), as written.

    ``ConfigError`` naming the file when it is missing, not UTF-8 or empty.
    """
    if not path.is_file():
        raise ConfigError(f"crosswalk file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
    except UnicodeDecodeError as err:
        raise ConfigError(f"crosswalk file {path} is not UTF-8 text: {err}") from err
    if not first.strip():
        raise ConfigError(f"crosswalk file {path} is empty (expected a header line)")
    return next(csv.reader([first], delimiter=_delimiter(first)))


def missing_columns(header: Sequence[str], *columns: str) -> list[str]:
    """Which of ``columns`` the header lacks (compared without case and surrounding blanks)."""
    have = {h.strip().lower() for h in header}
    return [c for c in columns if c.strip().lower() not in have]


def _read_csv(path: Path, code_column: str, target_column: str) -> tuple[list[CrosswalkRow], list[int]]:
    """(rows, lines skipped because their code is empty)."""
    code_key_, target_key = code_column.strip().lower(), target_column.strip().lower()
    with open(path, newline="", encoding="utf-8-sig") as fh:
        first = fh.readline()
        fh.seek(0)
        reader = csv.reader(fh, delimiter=_delimiter(first))
        header = next(reader, None)
        if header is None:
            raise ConfigError(
                f"crosswalk file {path} is empty (expected a header with columns {code_column},{target_column})"
            )
        columns = [h.strip().lower() for h in header]
        missing = missing_columns(header, code_column, target_column)
        if missing:
            default = (code_column, target_column) == (DEFAULT_CODE_COLUMN, DEFAULT_TARGET_COLUMN)
            hint = (
                "needs at least 'code' and 'class'; optional 'year', 'source' (or name other columns: "
                "--crosswalk-columns CODE,TARGET / code_column, target_column)"
                if default
                else f"the code column is {code_column!r} and the target column {target_column!r}"
            )
            raise ConfigError(
                f"crosswalk file {path} has no column(s) {', '.join(missing)}; its header (line 1) is {header} ({hint})"
            )
        idx = {"code": columns.index(code_key_), "class": columns.index(target_key)}
        for name in ("year", "source"):
            if name in columns and name not in (code_key_, target_key):
                idx[name] = columns.index(name)
        rows: list[CrosswalkRow] = []
        skipped: list[int] = []
        for line, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) < len(columns):
                cells = cells + [""] * (len(columns) - len(cells))

            def cell(name: str, cells: list[str] = cells) -> str:
                return cells[idx[name]] if name in idx else ""

            code = normalise_code(cell("code"))
            if code == NULL_CODE:
                skipped.append(line)
                continue
            cls = cell("class").strip()
            if not cls:
                raise ConfigError(
                    f"crosswalk file {path} line {line}: code {code!r} has an empty {target_column!r} "
                    "(map it to 0 for 'no label on purpose')"
                )
            source = cell("source").strip() or None
            rows.append(CrosswalkRow(code, cls, _year_cell(cell("year"), path, line), source, line))
    return rows, skipped


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


def is_yaml(path: Path) -> bool:
    """Whether ``path`` is read as a YAML ``{code: class}`` mapping (by its suffix)."""
    return path.suffix.lower() in (".yaml", ".yml")


def read_crosswalk(
    path: Path | str, *, code_column: str = DEFAULT_CODE_COLUMN, target_column: str = DEFAULT_TARGET_COLUMN
) -> Crosswalk:
    """Parse a crosswalk CSV (``code,class[,year][,source]``) or YAML (``{code: class}``) file.

    ``code_column`` / ``target_column`` name other CSV columns (e.g. EuroCrops' ``original_code``,
    ``HCAT3_code``); names are compared without case. Rows with an empty code are skipped (their
    lines in ``skipped_lines``). ``ConfigError`` names the file (and line) when it is missing,
    empty, lacks the columns, has a code with an empty target, or maps one code twice in the same
    scope.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"crosswalk file {p} does not exist")
    skipped: list[int] = []
    if is_yaml(p):
        if (code_column, target_column) != (DEFAULT_CODE_COLUMN, DEFAULT_TARGET_COLUMN):
            raise ConfigError(
                f"crosswalk file {p} is a YAML mapping {{code: class}}: it has no columns "
                f"{code_column!r}/{target_column!r} (give a CSV, or drop the column names)"
            )
        rows = _read_yaml(p)
    else:
        try:
            rows, skipped = _read_csv(p, code_column, target_column)
        except UnicodeDecodeError as err:
            raise ConfigError(f"crosswalk file {p} is not UTF-8 text: {err}") from err
    if not rows:
        raise ConfigError(f"crosswalk file {p} has no rows")
    if skipped:
        lines = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
        log.info("crosswalk file %s: %d row(s) without a code skipped (line %s)", p, len(skipped), lines)
    return Crosswalk(p, rows, code_column=code_column, target_column=target_column, skipped_lines=skipped)


# -- chains ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainHit:
    """What :meth:`CrosswalkChain.trace` found for a code.

    ``cls``: the legend class (None if unknown); ``step``: the 0-based step where the code was
    unknown (None if found); ``code``: the code looked up at that step (the last step's code if found).
    """

    cls: ResolvedClass | None
    step: int | None
    code: str


class CrosswalkChain:
    """Crosswalks applied in order: the target of step k is the code looked up in step k + 1.

    Only the last step's targets are legend classes (:meth:`resolve` checks them); the others are
    codes. A single crosswalk is a chain of one step.
    """

    def __init__(self, steps: Sequence[Crosswalk]) -> None:
        if not steps:
            raise ConfigError("a crosswalk chain needs at least one crosswalk")
        self.steps = list(steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def path(self) -> Path:
        """The last step's file (the one that names legend classes)."""
        return self.steps[-1].path

    def describe(self) -> str:
        """The files in order: ``a.csv [original_code -> HCAT3_code] -> b.csv``."""
        return " -> ".join(step.spec.describe() for step in self.steps)

    def resolve(self, legend: Sequence[LegendClass] | None, *, legend_name: str = "legend") -> None:
        """Resolve the last step's classes against ``legend`` (see :meth:`Crosswalk.resolve`)."""
        self.steps[-1].resolve(legend, legend_name=legend_name)

    def trace(self, code: str, *, year: int | None = None, source: Sequence[str] = ()) -> ChainHit:
        """Follow normalised ``code`` through every step (year/source scopes apply at each)."""
        current = code
        for k, step in enumerate(self.steps[:-1]):
            nxt = step.target(current, year=year, source=source)
            if nxt is None:
                return ChainHit(None, k, current)
            current = nxt
        hit = self.steps[-1].lookup(current, year=year, source=source)
        return ChainHit(hit, None if hit is not None else len(self.steps) - 1, current)

    def lookup(self, code: str, *, year: int | None = None, source: Sequence[str] = ()) -> ResolvedClass | None:
        """The legend class of ``code`` through the whole chain, or None if unknown at some step."""
        return self.trace(code, year=year, source=source).cls

    def flatten(
        self, *, year: int | None = None, source: Sequence[str] = ()
    ) -> tuple[dict[str, ResolvedClass], dict[str, ChainHit]]:
        """Every first-step code traced: ({code: class} of the codes that get through, {code: hit} of the others)."""
        found: dict[str, ResolvedClass] = {}
        lost: dict[str, ChainHit] = {}
        for code in sorted(self.steps[0].codes()):
            hit = self.trace(code, year=year, source=source)
            if hit.cls is not None:
                found[code] = hit.cls
            else:
                lost[code] = hit
        return found, lost


def as_chain(crosswalk: Crosswalk | CrosswalkChain) -> CrosswalkChain:
    """``crosswalk`` as a chain (a single crosswalk is a chain of one step)."""
    return crosswalk if isinstance(crosswalk, CrosswalkChain) else CrosswalkChain([crosswalk])


def read_chain(specs: Sequence[CrosswalkSpec]) -> CrosswalkChain:
    """Read every step of a chain (``ConfigError`` naming the file, the line and the problem)."""
    return CrosswalkChain(
        [read_crosswalk(s.path, code_column=s.code_column, target_column=s.target_column) for s in specs]
    )


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
