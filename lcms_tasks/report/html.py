"""HTML rendering of report.json and its matplotlib plots (PNG files next to report.html).

Plots use the Agg backend only (set inside each function, before pyplot is
imported) so reporting runs on headless workers. Every string that comes from
data (class, region, tile names, error texts) is HTML-escaped.

The same page prints as a document (A4, see :data:`CSS`: page numbers and the project in
the footer, each chapter on a new page, headings kept with what follows, short tables and
figures never split, long tables split between rows with their header repeated);
:mod:`lcms_tasks.report.pdf` prints it to PDF.

The page is for operators: every label is words, never a report.json key
(stages, figures and options have declared labels; an undeclared key falls back
to its words), class ids are shown with their legend names, a tile subset is
said at the top, and options are shown as configured, apart from the sums.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcms_tasks.report.stats import ClassInfo, value_at

log = logging.getLogger(__name__)

NO_DATA_RGB = (0.45, 0.45, 0.45)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless workers have no display; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _hex_rgb(color: str | None) -> tuple[float, float, float]:
    if not color:
        return (0.8, 0.0, 0.8)  # ids outside the legend show magenta so they stand out
    c = color.lstrip("#")
    return (int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255)


def colour_lut(legend: Sequence[ClassInfo]) -> np.ndarray:
    """(256, 4) RGBA float table: legend colours, grey for no data (0), magenta for unknown ids."""
    lut = np.tile(np.array([0.8, 0.0, 0.8, 1.0]), (256, 1))
    lut[0] = (*NO_DATA_RGB, 1.0)
    for c in legend:
        lut[c.id] = (*_hex_rgb(c.color), 1.0)
    return lut


def plot_confusion(matrix: Sequence[Sequence[float]], labels: Sequence[str], path: Path, title: str) -> None:
    """Confusion-matrix heatmap: colours row-normalised (recall), cells annotated with counts."""
    plt = _pyplot()
    cm = np.asarray(matrix, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(labels)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(title)
        for i in range(n):
            for j in range(n):
                value = cm[i, j]
                text = f"{int(value)}" if float(value).is_integer() else f"{value:.2f}"
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black"
                )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def plot_class_areas(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> None:
    """Horizontal bars of class areas (km²) in legend colours, 'no data' included."""
    plt = _pyplot()
    names = [str(r["name"]) for r in rows]
    areas = [float(r["area_km2"]) for r in rows]
    colours = [NO_DATA_RGB if r["id"] == 0 else _hex_rgb(r.get("color")) for r in rows]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(rows) + 1)))
    try:
        ax.barh(range(len(rows)), areas, color=colours, edgecolor="black", linewidth=0.5)
        ax.set_yticks(range(len(rows)), names)
        ax.invert_yaxis()
        ax.set_xlabel("area (km²)")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


READINESS_COLOURS = {"ready": "#27ae60", "not ready": "#e67e22", "empty": "#95a5a6"}


def readiness_status(tile: Mapping[str, Any]) -> str:
    return "empty" if tile.get("empty") else "ready" if tile.get("ready", True) else "not ready"


def plot_readiness(tiles: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The country's tiles (lon/lat boxes) coloured by the readiness gate's verdict."""
    plt = _pyplot()
    from matplotlib.patches import Patch, Rectangle

    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        for tile in tiles:
            x0, y0, x1, y1 = tile["lonlat_bounds"]
            colour = READINESS_COLOURS[readiness_status(tile)]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=colour, edgecolor="white", linewidth=0.5))
        xs = [v for t in tiles for v in (t["lonlat_bounds"][0], t["lonlat_bounds"][2])]
        ys = [v for t in tiles for v in (t["lonlat_bounds"][1], t["lonlat_bounds"][3])]
        ax.set_xlim(min(xs), max(xs))
        ax.set_ylim(min(ys), max(ys))
        ax.set_aspect(1 / max(np.cos(np.radians((min(ys) + max(ys)) / 2)), 0.1))
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        counts = {k: sum(1 for t in tiles if readiness_status(t) == k) for k in READINESS_COLOURS}
        ax.legend(
            handles=[Patch(color=c, label=f"{k} ({counts[k]})") for k, c in READINESS_COLOURS.items()],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
        ax.set_title("Data readiness per tile")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def plot_accuracy_bars(
    classes: Sequence[str],
    users: Sequence[float | None],
    producers: Sequence[float | None],
    path: Path,
    title: str,
    users_ci: Sequence[float | None] | None = None,
    producers_ci: Sequence[float | None] | None = None,
) -> None:
    """Horizontal bars of user's and producer's accuracy (%) per class, with 95 % CI whiskers when given.

    Undefined figures (None) get no bar and are marked 'undefined'.
    """
    plt = _pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.42 * n + 1.2)))
    try:
        y = np.arange(n)
        height = 0.38
        for offset, values, cis, label, colour in (
            (-height / 2, users, users_ci, "user's accuracy", "#2e86c1"),
            (height / 2, producers, producers_ci, "producer's accuracy", "#e67e22"),
        ):
            vals = np.array([np.nan if v is None else 100 * float(v) for v in values])
            err = None
            if cis is not None:
                err = np.array([0.0 if c is None else 100 * float(c) for c in cis])
                err = np.vstack([np.minimum(err, np.nan_to_num(vals)), np.minimum(err, 100 - np.nan_to_num(vals))])
            ax.barh(
                y + offset,
                np.nan_to_num(vals),
                height,
                xerr=err,
                color=colour,
                edgecolor="black",
                linewidth=0.4,
                label=label,
                error_kw={"elinewidth": 0.8, "capsize": 2},
            )
            for yi, v in zip(y + offset, vals, strict=True):
                if np.isnan(v):
                    ax.text(1, yi, "undefined", va="center", fontsize=7, color="#666")
        ax.set_yticks(y, list(classes))
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy (%)" + (", whiskers: 95 % confidence interval" if users_ci is not None else ""))
        ax.set_title(title)
        ax.grid(axis="x", color="#ddd", linewidth=0.5)
        ax.set_axisbelow(True)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.4 / max(n, 1)), ncol=2, fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_mosaic(
    canvas: np.ndarray,
    covered: np.ndarray,
    extent: tuple[float, float, float, float],
    legend: Sequence[ClassInfo],
    path: Path,
    title: str,
    changes: Sequence[Any] = (),
    regions: Sequence[Any] = (),
) -> None:
    """Class map mosaic (legend colours), change polygon outlines (black) and region outlines (dashed red).

    ``canvas`` (H, W) class ids, ``covered`` (H, W) bool (False where the project has no tile),
    ``extent`` (min_x, max_x, min_y, max_y) in the CRS of the geometries.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    rgba = colour_lut(legend)[canvas.astype(np.int64)]
    rgba[~covered] = (1.0, 1.0, 1.0, 0.0)
    height, width = canvas.shape
    aspect = height / max(width, 1)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 8 * aspect)))
    try:
        ax.imshow(rgba, extent=extent, interpolation="nearest")
        for geom in regions:
            _outline(ax, geom, color="red", linestyle="--", linewidth=1.6)
        for geom in changes:
            _outline(ax, geom, color="black", linestyle="-", linewidth=0.8)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title(title)
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=8)
        handles = [Patch(facecolor=NO_DATA_RGB, edgecolor="black", label="no data")]
        handles += [Patch(facecolor=_hex_rgb(c.color), edgecolor="black", label=c.name) for c in legend]
        if changes:
            handles.append(Patch(facecolor="none", edgecolor="black", label="change"))
        if regions:
            handles.append(Patch(facecolor="none", edgecolor="red", linestyle="--", label="region"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=True)
        fig.tight_layout()
        fig.savefig(path, dpi=100, bbox_inches="tight")  # the legend sits outside the axes: keep it, trim the rest
    finally:
        plt.close(fig)


def _outline(ax: Any, geom: Any, **style: Any) -> None:
    """Draw the boundary of a (multi)polygon."""
    if geom is None or geom.is_empty:
        return
    parts = getattr(geom, "geoms", [geom])
    for part in parts:
        if part.geom_type == "Polygon":
            for ring in [part.exterior, *part.interiors]:
                xs, ys = ring.xy
                ax.plot(xs, ys, **style)
        elif hasattr(part, "geoms"):
            _outline(ax, part, **style)


# -- HTML -------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, "DejaVu Sans", sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card .v { font-size: 1.5em; font-weight: 600; } .card .k { color: #666; font-size: 0.85em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #444; vertical-align: middle;
  margin-right: 0.4em; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
.warn { color: #a04000; } img { max-width: 100%; border: 1px solid #eee; }
.subset { border: 1px solid #a04000; background: #fff4e5; padding: 0.4em 0.8em; }
.nw { white-space: nowrap; }
figure { margin: 0.8em 0; } figure img { display: block; }
img.square { max-width: min(100%, 640px); } img.chart { max-width: min(100%, 760px); }
tr.drift td { background: #fde2d4; font-weight: 600; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
td.l code, li code, p code { overflow-wrap: anywhere; }
@page { size: A4; margin: 14mm 12mm 16mm 12mm;
  @bottom-right { content: "page " counter(page) " of " counter(pages);
    font: 7.5pt system-ui, "DejaVu Sans", sans-serif; color: #666; } }
@media print {
  body { margin: 0; max-width: none; font-size: 9.5pt; line-height: 1.35; }
  h1 { font-size: 17pt; margin-top: 0; } h2 { font-size: 13pt; margin-top: 1.2em; } h3 { font-size: 10.5pt; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  section.chapter { break-before: page; page-break-before: always; }
  table { font-size: 7.8pt; margin: 0.4em 0; } th, td { padding: 0.15em 0.4em; }
  thead { display: table-header-group; } tr, figure, img, .card { break-inside: avoid; page-break-inside: avoid; }
  table.keep, .cards, .keep { break-inside: avoid; page-break-inside: avoid; }
  img { border: none; max-height: 232mm; }
  img.map { max-height: 200mm; } img.square { max-width: 125mm; } img.chart { max-width: 165mm; max-height: 110mm; }
  .card { padding: 0.3em 0.7em; } .card .v { font-size: 1.25em; }
  .noprint { display: none; }
  a { color: inherit; text-decoration: none; }
}
"""


def css_string(value: Any) -> str:
    """A CSS string literal of any text (quotes, backslashes and '<' escaped: it cannot end the style element)."""
    text = " ".join(str(value).split())
    out = "".join(f"\\{ord(ch):x} " if ch in '"\\<>' else ch for ch in text)
    return f'"{out}"'


def _page_css(run: Mapping[str, Any]) -> str:
    """The printed page's footer: project and season bottom left (the page number is in :data:`CSS`)."""
    label = css_string(f"LCMS {_title(run).lower()} report — {run.get('project')}, season {run.get('season')}")
    return (
        f"@page {{ @bottom-left {{ content: {label}; "
        'font: 7.5pt system-ui, "DejaVu Sans", sans-serif; color: #666; } }'
    )


def esc(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for display ('–' for None); escaped text otherwise."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return esc(value)


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f} %"


#: Tables of at most this many rows are not split over printed pages.
KEEP_ROWS = 40


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    left: int = 1,
    left_cols: Sequence[int] = (),
    row_classes: Sequence[str] = (),
) -> str:
    """An HTML table; ``rows`` cells are already-escaped HTML; the first ``left`` columns, and the
    ``left_cols``, align left (text), the others right (numbers). ``row_classes``: a CSS class per row
    ('' for none), e.g. 'drift' to highlight it."""
    lefts = set(range(left)) | set(left_cols)
    head = "".join(f'<th class="{"l" if i in lefts else ""}">{esc(h)}</th>' for i, h in enumerate(headers))

    def tr(k: int) -> str:
        css = row_classes[k] if k < len(row_classes) else ""
        return f'<tr class="{esc(css)}">' if css else "<tr>"

    body = "".join(
        tr(k) + "".join(f'<td class="{"l" if i in lefts else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for k, r in enumerate(rows)
    )
    # Short tables are kept on one printed page; long ones break between rows, their header repeated.
    keep = ' class="keep"' if len(rows) <= KEEP_ROWS else ""
    return f"<table{keep}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _swatch(color: str | None) -> str:
    return f'<span class="swatch" style="background:{esc(color or "#737373")}"></span>'


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="v">{value}</div><div class="k">{esc(key)}</div></div>'


# -- labels: every key shown on the page is shown as words ------------------------------------------

#: Pipeline stages as the page names them.
STAGE_LABELS: dict[str, str] = {
    "download": "download",
    "features": "features",
    "add_reference": "add reference",
    "sampling": "sampling",
    "merge_features": "merge features",
    "training": "training",
    "prediction": "prediction",
    "postprocessing": "post-processing",
    "change_detection": "change detection",
    "reporting": "reporting",
    "missing": "missing",
}

#: Totalled marker figures (dotted paths of :data:`lcms_tasks.report.stats.ADDITIVE_FIGURES`).
FIGURE_LABELS: dict[str, str] = {
    "labelled_pixels": "labelled pixels",
    "samplable_total": "samplable pixels (eroded borders and no data excluded)",
    "no_data_labelled_pixels": "labelled pixels without imagery",
    "class_pixels": "labelled pixels per class",
    "samplable_pixels": "samplable pixels per class",
    "overlap.overlap_pixels": "pixels under overlapping polygons",
    "overlap.conflict_pixels": "pixels under overlapping polygons of different classes",
    "overlap.conflict_resolved_pixels": "conflicting pixels resolved by priority",
    "overlap.conflict_dropped_pixels": "conflicting pixels left unlabelled",
    "unknown_codes": "polygons with codes missing from the crosswalk, per code",
    "polygons_read": "polygons read (a polygon on several tiles counts once per tile)",
    "polygons_used": "polygons used",
    "polygons_rasterised": "polygons rasterised",
    "non_polygon": "geometries that are not polygons",
    "too_small": "polygons below the minimum area",
    "unlabelled_codes": "polygons whose code maps to no label, per code",
    "n_samples": "samples",
    "per_class": "samples per class",
}

#: Per-source figures of add_reference (``sources.*`` paths), shown inline in one row per source.
SOURCE_FIGURE_LABELS: dict[str, str] = {
    "polygons_read": "polygons read",
    "polygons_used": "used",
    "non_polygon": "not polygons",
    "too_small": "below the minimum area",
    "unknown_codes": "codes missing from the crosswalk",
    "unlabelled_codes": "codes mapped to no label",
}

#: Stage options as the page names them (``options`` section of report.json).
OPTION_LABELS: dict[str, dict[str, str]] = {
    "add_reference": {
        "sources": "reference sources",
        "overlap_rule": "overlapping polygons of different classes",
        "erosion_px": "border erosion (pixels)",
        "erosion_per_class": "border erosion per class (pixels)",
        "min_polygon_area_m2": "minimum polygon area (m²)",
    },
    "sampling": {
        "max_per_class": "samples per class and tile, at most",
        "fraction": "share of each class's samplable pixels drawn",
        "min_per_class": "samples per class and tile, at least (when drawing a share)",
        "seed": "random seed",
    },
}

_OVERLAP_RULES = {
    "priority": "the higher priority wins, ties stay unlabelled",
    "drop": "conflicting pixels stay unlabelled",
}


def words(key: str) -> str:
    """A key as words: its label where one is declared, else with underscores as spaces."""
    return FIGURE_LABELS.get(key) or STAGE_LABELS.get(key) or key.replace("_", " ").replace(".", ": ")


def stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, words(stage))


def _class_name(cid: Any, names: Mapping[int, str]) -> str:
    """A class as the page shows it: its legend name, or 'class N' for an id outside the legend."""
    try:
        return names.get(int(cid)) or f"class {int(cid)}"
    except (TypeError, ValueError):
        return str(cid)


def _id_order(key: Any) -> tuple[int, str]:
    return (int(key), "") if str(key).isdigit() else (1 << 30, str(key))


def _per_class(counts: Mapping[str, Any], names: Mapping[int, str]) -> str:
    """'cropland 1,234; forest 56' from {class id: count}, in id order (escaped HTML)."""
    if not counts:
        return "none"
    return "; ".join(f"{esc(_class_name(k, names))} {fmt(counts[k])}" for k in sorted(counts, key=_id_order))


def _per_code(counts: Mapping[str, Any]) -> str:
    """'999: 4; 12: 1' from {code: count}: codes are the reference's own data, shown as they are."""
    if not counts:
        return "none"
    return "; ".join(f"{esc(k)}: {fmt(v)}" for k, v in counts.items())


def describe_source(source: Mapping[str, Any]) -> str:
    """A configured reference source in words (escaped HTML)."""
    if source.get("type") == "change_store":
        statuses = source.get("statuses") or []
        later = source.get("max_seasons_later")
        seasons = source.get("seasons")
        return (
            f"the change store's decided changes ({esc(', '.join(map(str, statuses)) or 'none')}; priority "
            f"{fmt(source.get('priority'))}, rejected {fmt(source.get('rejected_priority'))}; serving their after "
            + ("season and every later one" if later is None else f"season and {fmt(later)} later one(s)")
            + (f"; seasons {esc(', '.join(map(str, seasons)))}" if seasons else "")
            + ")"
        )
    if source.get("type") == "synthetic_truth":
        return (
            f"synthetic truth parcels: {pct(source.get('tile_fraction'))} of the tiles, "
            f"{pct(source.get('parcel_fraction'))} of their parcels (seed {fmt(source.get('seed'))}, "
            f"priority {fmt(source.get('priority'))})"
        )
    seasons = source.get("seasons")
    return (
        f"file <code>{esc(source.get('path'))}</code>, classes from column <code>{esc(source.get('class_column'))}"
        f"</code> (priority {fmt(source.get('priority'))}"
        + (f", seasons {esc(', '.join(map(str, seasons)))}" if seasons else "")
        + ")"
    )


def _option_value(stage: str, key: str, value: Any) -> str:
    if key == "sources" and isinstance(value, list):
        return "<br>".join(describe_source(s) for s in value if isinstance(s, Mapping)) or "none"
    if key == "overlap_rule":
        return esc(f"{value}: {_OVERLAP_RULES.get(str(value), '')}".rstrip(": "))
    if key == "erosion_per_class":
        return "; ".join(f"{esc(k)} {fmt(v)}" for k, v in (value or {}).items()) or "none (the border erosion applies)"
    if key == "fraction" and value is None:
        return "none (a fixed number per class)"
    return fmt(value)


def _options_section(report: Mapping[str, Any]) -> list[str]:
    """The add_reference and sampling options as configured, and tiles whose markers say otherwise."""
    options = report.get("options") or {}
    if not options:
        return []
    rows = []
    for stage, values in options.items():
        labels = OPTION_LABELS.get(stage, {})
        for key, value in values.items():
            rows.append([esc(stage_label(stage)), esc(labels.get(key, words(key))), _option_value(stage, key, value)])
    parts = ["<h3>Options as configured</h3>", table(["stage", "option", "value"], rows, left=3)]
    differing = (report["total"].get("reference") or {}).get("options_differing_in_markers") or []
    items = []
    for d in differing:
        label = OPTION_LABELS.get(d["stage"], {}).get(d["option"], words(d["option"]))
        seen = "; ".join(
            f"{fmt(v['n_tiles'])} tile(s) with {esc(v['value'])} ({esc(', '.join(v['tiles'][:10]))}"
            + (" ..." if len(v["tiles"]) > 10 else "")
            + ")"
            for v in d["in_markers"]
        )
        items.append(
            f"<li>{esc(stage_label(d['stage']))}, {esc(label)}: configured {esc(d['configured'])}, but {seen}</li>"
        )
    if items:
        parts.append(
            '<p class="warn">Some tiles were processed with other options than the config sets now:</p>'
            f'<ul class="warn">{"".join(items)}</ul>'
        )
    return parts


def _class_table(rows: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ["class", "id", "pixels", "area (km²)", "share", "mean confidence"],
        [
            [
                _swatch(r.get("color")) + esc(r["name"]),
                fmt(r["id"]),
                fmt(r["pixels"]),
                fmt(r["area_km2"], 4),
                pct(r["share"]),
                fmt(r.get("mean_confidence")),
            ]
            for r in rows
        ],
    )


def _transition_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>No change polygons.</p>"
    return table(
        ["from", "to", "polygons", "area (km²)"],
        [[esc(r["from_name"]), esc(r["to_name"]), fmt(r["count"]), fmt(r["area_km2"], 4)] for r in rows],
        left=2,
    )


def _img(name: str | None, alt: str, kind: str = "chart") -> str:
    """A figure of the page; ``kind`` ('map', 'square', 'chart') sets its printed size."""
    return f'<figure><img src="{esc(name)}" alt="{esc(alt)}" class="{esc(kind)}"></figure>' if name else ""


_CLASS_MAPS = {"class_pixels", "samplable_pixels", "per_class"}  # {class id: count}: shown with class names
_CODE_MAPS = {"unknown_codes", "unlabelled_codes"}  # {reference code: count}: codes are data


def _figure_value(key: str, value: Any, names: Mapping[int, str]) -> str:
    if isinstance(value, Mapping):
        return _per_class(value, names) if key in _CLASS_MAPS else _per_code(value)
    return fmt(value)


def _totals_rows(totals: Mapping[str, Any], paths: Sequence[str], names: Mapping[int, str]) -> list[list[str]]:
    """Rows (label, value) of summed figures, in the order declared; per-source figures grouped by source."""
    rows = []
    for path in paths:
        if path.startswith("sources."):
            continue
        key = path.removesuffix(".*")
        value = value_at(totals, key)
        if value is not None:
            rows.append([esc(words(key)), _figure_value(key.rsplit(".", 1)[-1], value, names)])
    return rows


def _source_rows(totals: Mapping[str, Any], sources: Sequence[Any], names: Mapping[int, str]) -> list[list[str]]:
    """One row per reference source: its summed figures, the source described as configured."""
    import re

    rows = []
    for key, figures in (totals.get("sources") or {}).items():
        match = re.match(r"sources\[(\d+)\]", str(key))
        index = int(match.group(1)) if match else None
        if index is not None and index < len(sources) and isinstance(sources[index], Mapping):
            label = f"source {index + 1}: {describe_source(sources[index])}"
        else:
            label = esc(words(str(key)))
        cells = "; ".join(
            f"{esc(SOURCE_FIGURE_LABELS.get(k, words(k)))} {_figure_value(k, v, names)}" for k, v in figures.items()
        )
        rows.append([label, cells or "none"])
    return rows


def _coverage_line(run: Mapping[str, Any]) -> str:
    """The line under the title saying which tiles the report covers (a subset stands out)."""
    n, of = run.get("n_tiles"), run.get("n_project_tiles")
    subset = run.get("tile_subset")
    if subset:
        shown = ", ".join(map(str, subset[:50])) + (f" and {len(subset) - 50} more" if len(subset) > 50 else "")
        return (
            f'<p class="warn subset"><strong>Tile subset:</strong> this report covers {fmt(n)} of the project\'s '
            f"{fmt(of)} tiles ({esc(shown)}). Areas, totals and the AOI area are those of these tiles only.</p>"
        )
    if of is None:
        return f"<p>Tiles: {fmt(n)}.</p>"
    if run.get("gaps"):
        return (
            f'<p class="warn"><strong>Gaps:</strong> this report covers {fmt(n)} of the project\'s {fmt(of)} tiles; '
            f'{fmt(len(run["gaps"]))} failed in a stage of the run (<a href="#gaps">Gaps</a>).</p>'
        )
    return f"<p>This report covers all {fmt(of)} tiles of the project.</p>"


def _gaps_section(run: Mapping[str, Any]) -> list[str]:
    """The tiles an upstream stage run failed on (within its tolerance): left out of every figure."""
    gaps = run.get("gaps") or []
    if not gaps:
        return []
    rows = "".join(f"<tr><td>{esc(g['tile'])}</td><td>{esc(g['reason'])}</td></tr>" for g in gaps)
    return [
        '<section class="chapter" id="gaps"><h2>Gaps</h2>',
        f'<p class="warn"><strong>{fmt(len(gaps))} tile(s) failed</strong> in a stage of this run, within the '
        "stage's failure tolerance: they are left out of every figure and map of this report. Re-run them with "
        "<code>lcms rerun-failed STAGE --run-id RUN</code> (or trigger the stage's DAG with "
        "<code>rerun_failed</code>): the chain below then fills the gaps.</p>",
        f"<table><thead><tr><th>tile</th><th>why</th></tr></thead><tbody>{rows}</tbody></table></section>",
    ]


def _readiness_section(run: Mapping[str, Any], images: Mapping[str, Any]) -> list[str]:
    """The data-readiness gate: the map of the tiles, the thresholds, the tiles not ready and why."""
    block = run.get("readiness") or {}
    if not block.get("n_tiles"):
        return []
    gate = block["thresholds"]
    parts = [
        '<section class="chapter" id="readiness"><h2>Data readiness</h2>',
        f"<p>A tile is ready for classification when at most {pct(gate['max_share_below'])} of its pixels have "
        f"fewer than {fmt(gate['min_valid_observations'])} clear observation(s) over the season. "
        f"{fmt(block['n_ready'])} of {fmt(block['n_tiles'])} tile(s) are ready; {fmt(block['n_not_ready'])} are not "
        f"({fmt(block['n_empty'])} empty: no clear observation at all).</p>",
    ]
    if images.get("readiness"):
        parts.append(_img(images["readiness"], "Data readiness per tile", "map"))
    if block["not_ready"]:
        rows = "".join(
            f"<tr><td>{esc(r['tile'])}</td><td>{esc(r['reason'])}</td><td>{fmt(r['mean_valid_observations'])}</td>"
            f"<td>{'predicted, flagged' if r['mapped'] else 'no data (not sampled, not predicted)'}</td></tr>"
            for r in block["not_ready"]
        )
        parts.append(
            "<table><thead><tr><th>tile</th><th>why not ready</th><th>mean clear observations</th>"
            f"<th>in the maps</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    parts.append("</section>")
    return parts


def _inputs_section(report: Mapping[str, Any]) -> list[str]:
    """Missing inputs per stage, and the corrupt ones with their file and problem."""
    parts: list[str] = []
    missing = report.get("missing_inputs") or {}
    if any(missing.values()):
        items = "".join(
            f"<li>{esc(stage_label(stage))} ({fmt(len(v))}): {esc(', '.join(map(str, v)))}</li>"
            for stage, v in missing.items()
            if v
        )
        parts.append(f'<h2>Missing inputs</h2><ul class="warn">{items}</ul>')
    corrupt = report.get("corrupt_inputs") or []
    if corrupt:
        parts.append(
            '<h3>Corrupt inputs</h3><p class="warn">Marked complete but unreadable; the tiles are reported as '
            "missing these inputs. Re-run the stage on them.</p>"
        )
        parts.append(
            table(
                ["stage", "tile", "file", "problem"],
                [
                    [esc(stage_label(c["stage"])), esc(c["tile"]), f"<code>{esc(c['file'])}</code>", esc(c["problem"])]
                    for c in corrupt
                ],
                left=4,
            )
        )
    return parts


def _metrics_section(report: Mapping[str, Any], images: Mapping[str, Any], names: Mapping[int, str]) -> list[str]:
    """Test metrics per learned class; classes dropped from training or never seen listed as such."""
    metrics = report.get("metrics")
    training = report.get("training") or {}
    parts = [f"<h2>Model test metrics: {esc(TEST_SPLIT)}</h2>"]
    dropped = training.get("dropped_classes") or []
    absent = training.get("absent_classes") or []
    minimum = training.get("min_samples_per_class")
    if metrics:
        labelled = bool((report.get("area_adjusted") or {}).get("available"))
        meaning = (
            "The map's accuracy is the area-adjusted one above."
            if labelled
            else "They describe the model on held-out reference pixels, not the map: there are no reference labels "
            "of a probability sample for this season (see Area-adjusted accuracy)."
        )
        parts.append(
            f"<p>Overall accuracy {pct(metrics.get('overall_accuracy'))}, kappa {fmt(metrics.get('kappa'))} on the "
            f"{esc(TEST_SPLIT)}; test samples of classes the model did not learn count as errors. {meaning}</p>"
        )
        parts.append(_img(images.get("confusion"), "confusion matrix", "square"))
        parts.append(_img(images.get("test_accuracy_bars"), "precision (user's) and recall (producer's) accuracy"))
        rows = [
            [
                esc(v.get("name") or _class_name(k, names)),
                fmt(v.get("precision")),
                fmt(v.get("recall")),
                fmt(v.get("f1")),
                fmt(v.get("support")),
                "",
            ]
            for k, v in (metrics.get("per_class") or {}).items()
        ]
        at_least = f", fewer than the minimum of {fmt(minimum)}" if minimum is not None else ""
        for c in dropped:
            note = f"dropped from training: {fmt(c.get('train_samples'))} training samples{at_least}"
            rows.append([esc(c["name"]), "–", "–", "–", fmt(c.get("test_samples")), esc(note)])
        for c in absent:
            if c.get("test_samples"):
                rows.append([esc(c["name"]), "–", "–", "–", fmt(c["test_samples"]), "not learned: no training sample"])
        parts.append('<div class="keep"><h3>Per class</h3>')
        parts.append(table(["class", "precision", "recall", "F1", "test samples", "note"], rows, left_cols=[5]))
        parts.append("</div>")
    else:
        parts.append('<p class="warn">No training metrics available.</p>')
    if dropped:
        listed = "; ".join(
            f"{esc(c['name'])} ({fmt(c.get('train_samples'))} training, {fmt(c.get('test_samples'))} test samples)"
            for c in dropped
        )
        parts.append(
            f'<p class="warn">Classes dropped from training for too few samples: {listed}. '
            "The maps never show them.</p>"
        )
    never = [c for c in absent if not c.get("test_samples")]
    if never:
        parts.append(
            f"<p>Legend classes without any training or test sample: {esc(', '.join(c['name'] for c in never))}.</p>"
        )
    return parts


def _reference_section(report: Mapping[str, Any], names: Mapping[int, str]) -> list[str]:
    ref = report["total"]["reference"]
    summed = ref.get("summed_figures") or {}
    options = report.get("options") or {}
    sources = (options.get("add_reference") or {}).get("sources") or []
    rows = [
        ["tiles with reference (labelled pixels)", fmt(ref["n_tiles_with_reference"])],
        ["tiles processed by add reference", fmt(ref.get("n_tiles_with_add_reference"))],
        ["tiles with training samples", fmt(ref["n_tiles_sampled"])],
        ["tiles without samples", esc(", ".join(f"{k} ({v})" for k, v in ref["skipped_reasons"].items()) or "none")],
        ["samples", fmt(ref["n_samples"])],
        *_totals_rows(
            ref.get("sampling_totals") or {}, [p for p in summed.get("sampling", []) if p != "n_samples"], names
        ),
        *_totals_rows(ref.get("add_reference_totals") or {}, summed.get("add_reference", []), names),
        *_source_rows(ref.get("add_reference_totals") or {}, sources, names),
    ]
    parts = [
        "<h2>Reference data</h2>",
        "<p>Sums over the tiles of this report; options are shown as configured, not summed.</p>",
        table(["figure", "value"], rows, left=2),
    ]
    parts += _validated_section(ref.get("validated"), names)
    parts += _options_section(report)
    return parts


#: Decisions listed one per row in the report, at most (the JSON report lists them all).
MAX_DECISION_ROWS = 500


def _validated_section(validated: Mapping[str, Any] | None, names: Mapping[int, str]) -> list[str]:
    """How many validated polygons (operators' decisions from the change store) add_reference used, and which."""
    if not validated:
        return []
    parts = ["<h3>Validated changes used as reference</h3>"]
    by = validated.get("by_status") or {}
    decisions = [f"#{d}" for d in validated.get("decision_ids") or []]
    skipped = validated.get("skipped_reasons") or {}
    if skipped:
        why = "; ".join(f"{esc(k)} ({fmt(v)} tile(s))" for k, v in skipped.items())
        if validated.get("n_tiles_read"):  # read on some tiles and not on others: worth a look
            parts.append(f'<p class="warn">The change store was not read on some tiles: {why}.</p>')
        else:
            parts.append(f"<p>The change store was not read: {why}.</p>")
    listed = ""
    if decisions:
        listed = ": " + esc(", ".join(decisions[:50])) + (" ..." if len(decisions) > 50 else "")
    parts.append(
        f"<p><strong>{fmt(validated.get('polygons_used', 0))} validated polygon(s)</strong> used (confirmed "
        f"{fmt(by.get('confirmed', 0))}, corrected {fmt(by.get('corrected', 0))}, rejected as no change "
        f"{fmt(by.get('rejected', 0))}; {fmt(validated.get('carried_forward', 0))} decided for an earlier season), "
        f"{fmt(validated.get('polygons_rasterised', 0))} of them labelling pixels, from {fmt(len(decisions))} "
        f"decision(s){listed}.</p>"
    )
    without = validated.get("without_decision") or []
    if without:
        shown = esc(", ".join(map(str, without[:10]))) + (" ..." if len(without) > 10 else "")
        parts.append(
            f'<p class="warn">{fmt(len(without))} change(s) have a decided status but no decision record '
            f"(set outside the Validation Tool): {shown}</p>"
        )
    polygons = validated.get("polygons") or []
    rows = []
    for p in polygons[:MAX_DECISION_ROWS]:
        notes = [("carried forward", p.get("carried_forward")), ("trimmed", p.get("trimmed"))]
        notes.append(("no pixel", not p.get("rasterised")))
        decision = f"#{p['decision_id']}" if p.get("decision_id") is not None else "none"
        rows.append(
            [
                esc(decision),
                f"<code>{esc(p.get('change_id'))}</code>",
                esc(p.get("status")),
                esc(_class_name(p.get("class"), names)),
                esc(p.get("season_after")),
                esc(p.get("decided_by") or ""),
                esc(str(p.get("decided_at") or "")[:19]),
                esc(", ".join(label for label, on in notes if on)),
                esc(", ".join(map(str, p.get("tiles") or []))),
            ]
        )
    if rows:
        headers = ["decision", "change", "status", "reference class", "after season", "by", "at", "note", "tiles"]
        parts.append(table(headers, rows, left=len(headers)))
    if len(polygons) > MAX_DECISION_ROWS:
        parts.append(f"<p>... and {fmt(len(polygons) - MAX_DECISION_ROWS)} more (see report.json).</p>")
    return parts


TEST_SPLIT = "test split (not a probability sample)"


def pct_ci(value: Any, half_width: Any) -> str:
    """A proportion as a percentage with its 95 % confidence interval, kept on one line (HTML): '90.1 % ± 1.2'."""
    if value is None:
        return "–"
    text = pct(value) + ("" if half_width is None else f" ± {100 * float(half_width):.1f}")
    return f'<span class="nw">{text}</span>'


def _note_words(note: str) -> str:
    """An estimator's note with the figure it is about in words ("users_accuracy['x']" -> "user's accuracy of 'x'")."""
    import re

    labels = {"users_accuracy": "user's accuracy", "producers_accuracy": "producer's accuracy"}
    return re.sub(r"\b(users_accuracy|producers_accuracy)\[(.*?)\]", lambda m: f"{labels[m[1]]} of {m[2]}", note)


def _area_adjusted_card(block: Mapping[str, Any] | None) -> list[str]:
    if not block or not block.get("available"):
        return [_card("area-adjusted overall accuracy", "no labels")]
    return [
        _card(
            "area-adjusted overall accuracy (95 % CI)",
            pct_ci(block.get("overall_accuracy"), block.get("overall_accuracy_ci95")),
        )
    ]


def _area_adjusted_section(report: Mapping[str, Any], figure: str = "") -> list[str]:
    """Area-adjusted accuracy and class areas with 95 % confidence intervals, or plainly why there are none.

    ``figure``: HTML of the user's and producer's accuracy bars, shown under the class table.
    """
    block = report.get("area_adjusted") or {}
    parts = ["<h2>Area-adjusted accuracy</h2>"]
    if not block.get("available"):
        reason = block.get("reason") or "no reference labels from a probability sample for this season"
        parts.append(
            f'<p class="warn"><strong>No area-adjusted accuracy for this season:</strong> {esc(reason)}. Without '
            "reference labels of a probability sample this report gives no defensible map accuracy and no "
            "confidence intervals for the class areas; the model's test figures below are a "
            f"{esc(TEST_SPLIT)}.</p>"
        )
        looked = block.get("looked_for") or []
        where = f"<code>{esc(looked[0])}</code>" if looked else "the season's accuracy folder"
        if block.get("problem"):
            parts.append("<p>Fix the sample design or its labels named above, then run the reporting stage again.</p>")
        else:
            parts.append(
                "<p>To get them: draw a sample with <code>lcms accuracy design</code> into "
                f"{where}, label its points (the reference column of a copy of points.csv, saved there as "
                "labels.csv) and run the reporting stage again; or point the reporting stage's accuracy design and "
                "labels options to them.</p>"
            )
        return parts
    design = block.get("design") or {}
    n, labelled = block.get("n_points"), block.get("n_labelled")
    strata = design.get("strata") or []
    kinds = {s["kind"] for s in strata}
    stratified_by = "the map classes" + (
        ", the change transitions and a buffer around changes" if "change" in kinds else ""
    )
    parts.append(
        f"<p>From a <strong>stratified random sample of {fmt(n)} points</strong> ({fmt(labelled)} labelled) over "
        f"{fmt(block.get('total_area'), 3)} km² of mapped pixels inside the AOI, stratified by {esc(stratified_by)} "
        f"({fmt(len(strata))} strata). Estimators of Stehman (2014), which weight each point by its inclusion "
        "probability; 95 % confidence intervals are the estimate ± 1.96 standard errors.</p>"
    )
    if block.get("label_source") == "synthetic_truth":
        points = design.get("points")
        seed = (design.get("options") or {}).get("seed")
        parts.append(
            '<p class="warn"><strong>Labels come from the synthetic truth:</strong> each point is labelled with the '
            "synthetic generator's true class at its pixel, a stand-in for the reference labels a labeller would give. "
            f"The reporting stage drew the sample over this season's map (seed {fmt(seed)})"
            + (f"; its points and labels are in <code>{esc(points)}</code>" if points else "")
            + ".</p>"
        )
    else:
        parts.append(
            f"<p>Reference labels: <code>{esc(design.get('labels'))}</code>; sample design: "
            f"<code>{esc(design.get('origin'))}</code>.</p>"
        )
    parts.append(
        table(
            ["figure", "value"],
            [
                [
                    "overall accuracy (95 % CI)",
                    pct_ci(block.get("overall_accuracy"), block.get("overall_accuracy_ci95")),
                ],
                ["standard error of overall accuracy", pct(block.get("overall_accuracy_se"))],
                ["sample points (labelled)", f"{fmt(n)} ({fmt(labelled)})"],
                [
                    "anticipated standard error of the design",
                    pct((design.get("allocation") or {}).get("anticipated_overall_accuracy_se")),
                ],
            ],
        )
    )
    colours = {str(c["name"]): c.get("color") for c in report.get("legend") or []}

    def area(key: str, name: str) -> Any:
        return (block.get(key) or {}).get(name)

    rows = []
    for name in block.get("classes") or []:
        estimate, ci = area("area", name), area("area_ci95", name)
        rows.append(
            [
                f'<span class="nw">{_swatch(colours.get(name))}{esc(name)}</span>',
                fmt(area("mapped_area", name), 4),
                fmt(estimate, 4),
                "–" if ci is None else f"± {fmt(ci, 4)}",
                pct_ci(area("users_accuracy", name), area("users_accuracy_ci95", name)),
                pct_ci(area("producers_accuracy", name), area("producers_accuracy_ci95", name)),
                fmt(area("n_map", name)),
                fmt(area("n_reference", name)),
            ]
        )
    parts.append("<h3>Class areas and accuracies with 95 % confidence intervals</h3>")
    parts.append(
        table(
            [
                "class",
                "mapped area (km²)",
                "estimated area (km²)",
                "95 % CI (km²)",
                "user's accuracy",
                "producer's accuracy",
                "points mapped as",
                "points labelled as",
            ],
            rows,
        )
    )
    parts.append(
        "<p>Mapped area: the map's pixels of the class inside the AOI (pixel counting). Estimated area: the area "
        "the reference labels say the class covers, with its 95 % confidence interval; the estimated areas add up "
        "to the mapped total.</p>"
    )
    parts.append(figure)
    parts.append('<div class="keep"><h3>Sample design</h3>')
    parts.append(
        table(
            ["stratum", "pixels", "area (km²)", "weight", "points", "labelled", "inclusion probability"],
            [
                [
                    esc(s["name"]),
                    fmt(s.get("pixels")),
                    fmt(s.get("area_km2"), 4),
                    fmt(s.get("weight"), 4),
                    fmt(s.get("n")),
                    fmt(s.get("n_labelled")),
                    fmt(s.get("inclusion_probability"), 4),
                ]
                for s in strata
            ],
        )
    )
    allocation = design.get("allocation") or {}
    options = design.get("options") or {}
    if allocation:
        parts.append(
            f"<p>Sample size n = ceil((Σ W<sub>h</sub> S<sub>h</sub> / {fmt(options.get('target_se'))})²) = "
            f"{fmt(allocation.get('n_cochran'))} with S<sub>h</sub> = √(U<sub>h</sub>(1 − U<sub>h</sub>)) from the "
            f"anticipated user's accuracies; at least {fmt(options.get('min_per_stratum'))} points per stratum "
            f"(all its pixels if fewer), the rest in proportion to area: {fmt(allocation.get('n_total'))} points.</p>"
        )
    notes = block.get("notes") or []
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(_note_words(str(n)))}</li>" for n in notes) + "</ul>")
    parts.append("</div>")
    return parts


def _pdf_note(report: Mapping[str, Any]) -> str:
    """Under the title: where the PDF of this page is, or plainly why there is none."""
    block = report.get("pdf")
    if not block:
        return ""
    if block.get("made") is not False:  # made, or to be printed from this very page
        name = esc(block.get("file") or "report.pdf")
        return f'<p class="noprint">This report as a printable document (A4 PDF): <a href="{name}">{name}</a>.</p>'
    return f'<p class="warn"><strong>No PDF of this report:</strong> {esc(block.get("reason") or "not made")}.</p>'


def _transitions_by_region(report: Mapping[str, Any]) -> str:
    """One table of the change transitions of every region (and outside the AOI)."""
    rows = []
    for zone in [*(report.get("regions") or []), report.get("outside_aoi") or {}]:
        for r in (zone.get("changes") or {}).get("transitions") or []:
            rows.append(
                [
                    esc(zone.get("name")),
                    esc(r["from_name"]),
                    esc(r["to_name"]),
                    fmt(r["count"]),
                    fmt(r["area_km2"], 4),
                ]
            )
    if not rows:
        return "<p>No change polygons in any region.</p>"
    return table(["region", "from", "to", "polygons (pieces)", "area (km²)"], rows, left=3)


def _title(run: Mapping[str, Any]) -> str:
    return str(run.get("legend_name") or "land_cover").replace("_", " ").capitalize()


def _product_lines(run: Mapping[str, Any]) -> list[str]:
    """Which product this is among the run's, where it is mapped, and the model's season (warned if another)."""
    out = []
    products = list(run.get("products") or [])
    if len(products) > 1:
        mask = run.get("mask")
        where = (
            f"mapped inside the {esc(mask['product'])} classes {esc(', '.join(mask['classes']))} (no data elsewhere)"
            if mask
            else "mapped everywhere"
        )
        others = ", ".join(p for p in products if p != run.get("product"))
        out.append(
            f"<p>Product <b>{esc(run.get('product'))}</b>, {where}; the run's other products: {esc(others)} "
            "(each has its own report).</p>"
        )
    seasons = list(run.get("model_seasons") or [])
    if run.get("model_warning"):
        out.append(f'<p class="warn"><b>Model of another season:</b> {esc(run["model_warning"])}.</p>')
    elif seasons:
        out.append(f"<p>Model trained on this season ({esc(', '.join(seasons))}): one model per season.</p>")
    return out


def _changes_section(report: Mapping[str, Any]) -> list[str]:
    run = report["run"]
    if run.get("primary_product") and run.get("product") != run["primary_product"]:
        return [
            "<h2>Changes</h2>",
            f"<p>Change detection works on the {esc(run['primary_product'])} product: see its report.</p>",
        ]
    ch = report["total"]["changes"]
    return [
        "<h2>Changes</h2>",
        f"<p>{fmt(ch['n_polygons'])} change polygons, {fmt(ch['area_km2'], 4)} km² "
        f"(tiles with change data: {fmt(ch['n_tiles'])}).</p>",
        "<h3>By transition</h3>",
        _transition_table(ch["transitions"]),
        "<h3>By transition and region</h3>",
        "<p>Polygons are clipped to the regions: a polygon crossing a region boundary counts once in each.</p>",
        _transitions_by_region(report),
    ]


def _signed(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{float(value):+,.{digits}f}"


def _previous_season_section(report: Mapping[str, Any]) -> list[str]:
    """Class areas per region against the previous season's report; changes beyond the bound highlighted."""
    block = report.get("previous_season")
    if block is None:
        return []
    parts = ["<h2>Comparison with the previous season</h2>"]
    if not block.get("available"):
        parts.append(
            f"<p><strong>No comparison with a previous season:</strong> {esc(block.get('reason') or 'none')}.</p>"
        )
        return parts
    threshold = float(block.get("drift_threshold") or 0.0)
    minimum = float(block.get("drift_min_area_km2") or 0.0)
    parts.append(
        f"<p>Mapped class areas of this season against season {esc(block.get('season'))} (its report of run "
        f"<code>{esc(block.get('run_id'))}</code>, generated {esc(block.get('generated_at'))}), per region and for "
        f"the AOI as a whole. A class whose area changed by more than {100 * threshold:g} % of its previous area"
        + (f" (and by at least {fmt(minimum, 4)} km²)" if minimum > 0 else "")
        + ", or that the previous map did not have, is <strong>highlighted as possible map drift</strong>: land "
        "cover rarely changes that much in one season, so check the model and the imagery before reading it as a "
        "real change. No data is not compared (see Data quality).</p>"
    )
    notes = block.get("notes") or []
    if notes:
        parts.append(
            '<p class="warn">Read with care:</p><ul class="warn">'
            + "".join(f"<li>{esc(n)}</li>" for n in notes)
            + "</ul>"
        )
    drifting = block.get("drifting") or []
    if drifting:
        items = "".join(
            f"<li>{esc(d['region'])}: {esc(d['name'])} "
            + ("new this season" if d.get("new_class") else f"{100 * float(d['relative_change']):+.1f} %")
            + f" ({fmt(d['previous_km2'], 4)} → {fmt(d['current_km2'], 4)} km²)</li>"
            for d in drifting
        )
        parts.append(
            f'<p class="warn"><strong>{fmt(len(drifting))} class area(s) beyond ±{100 * threshold:g} %:</strong></p>'
            f'<ul class="warn">{items}</ul>'
        )
    else:
        parts.append(f"<p>No class area changed by more than {100 * threshold:g} %: no sign of map drift.</p>")
    for zone in block.get("regions") or []:
        rows, classes = [], []
        for c in zone.get("classes") or []:
            relative = (
                "new"
                if c.get("new_class")
                else ("–" if c.get("relative_change") is None else f"{100 * float(c['relative_change']):+.1f} %")
            )
            rows.append(
                [
                    f'<span class="nw">{_swatch(c.get("color"))}{esc(c["name"])}</span>',
                    fmt(c.get("previous_km2"), 4),
                    fmt(c.get("current_km2"), 4),
                    _signed(c.get("change_km2")),
                    relative,
                    "possible map drift" if c.get("drift") else "",
                ]
            )
            classes.append("drift" if c.get("drift") else "")
        parts.append(f"<h3>{esc(zone['region'])}</h3>")
        parts.append(
            table(
                [
                    "class",
                    f"season {block.get('season')} (km²)",
                    f"season {report['run']['season']} (km²)",
                    "change (km²)",
                    "change",
                    "note",
                ],
                rows,
                left_cols=[5],
                row_classes=classes,
            )
        )
    return parts


def _accuracy_figure(images: Mapping[str, Any], key: str, alt: str) -> str:
    return _img(images.get(key), alt, "chart")


def _change_timing_rows(block: Mapping[str, Any] | None) -> list[str]:
    """Change accuracy with the temporal tolerance: detections on time / late / false, the reference changes'
    recall (this season's so far, and the completed one of the season the tolerance reaches back to)."""
    if not block:
        return []
    k = block.get("tolerance_seasons", 0)
    d = block.get("detections") or {}
    out = [
        f"<h3>Change timing (tolerance: {esc(k)} season{'s' if k != 1 else ''})</h3>",
        "<p>A change detected in a later season than the one it happened in is <em>late</em>, not false; "
        "areas of dissolved polygons, summed over tiles.</p>",
    ]
    rows = [
        ["detected (km²)", fmt(d.get("detected_km2"), 4)],
        [
            "on time / late / false (km²)",
            " / ".join(fmt(d.get(key), 4) for key in ("on_time_km2", "late_km2", "false_km2")),
        ],
        ["precision (same season)", pct(d.get("precision"))],
        ["precision with tolerance", pct(d.get("precision_with_tolerance"))],
    ]
    ref = block.get("reference") or {}
    rows.append([f"recall of {esc(ref.get('season'))}'s changes so far", pct(ref.get("recall"))])
    done = block.get("completed_reference")
    if done:
        rows.append([f"recall of {esc(done.get('season'))}'s changes (same season)", pct(done.get("recall"))])
        rows.append(
            [f"recall of {esc(done.get('season'))}'s changes with tolerance", pct(done.get("recall_with_tolerance"))]
        )
        rows.append([f"{esc(done.get('season'))}'s changes missed (km²)", fmt(done.get("missed_km2"), 4)])
    out.append(table(["figure", "value"], rows))
    return out


def _parcel_section(block: Mapping[str, Any] | None) -> list[str]:
    """The "Parcel agreement" section (``lcms parcels markers``): agreement per declared crop, confusion."""
    if not block:
        return []
    held = block.get("held_out") or {}
    counts = block.get("status_counts") or {}
    parts = [
        '<section class="chapter"><h2>Parcel agreement</h2>',
        f"<p>{fmt(block.get('n_parcels'))} declared parcels ({fmt(counts.get('too_small'))} too small to predict); "
        f"a classifier trained on {fmt(block.get('n_train'))} of them (spatially grouped) agrees with the declared "
        f"crop on {pct(held.get('agreement'))} of {fmt(held.get('n'))} held-out parcels (always answering the most "
        f"common crop: {pct(held.get('majority_class_rate'))}); {fmt(block.get('disagreements'))} parcels disagree "
        f"with a probability of at least {fmt(block.get('disagreement_threshold'), 2)}.</p>",
    ]
    per_crop = block.get("agreement_per_crop") or {}
    rows = [[esc(name), fmt(r["n"]), fmt(r["agree"]), pct(r["rate"])] for name, r in per_crop.items()]
    parts.append(table(["declared crop", "held-out parcels", "agreeing", "agreement"], rows))
    confusion = block.get("confusion") or {}
    labels = list(confusion.get("labels") or [])
    if labels:
        matrix = confusion.get("rows_declared_columns_predicted") or []
        parts.append("<p>Held-out parcels: declared crop (rows) against predicted crop (columns).</p>")
        body = [[esc(n), *(fmt(v) for v in row)] for n, row in zip(labels, matrix, strict=False)]
        parts.append(table(["declared \\ predicted", *labels], body))
    parts.append("</section>")
    return parts


def render(report: Mapping[str, Any], images: Mapping[str, Any]) -> str:
    """The report page, for the screen and for print (A4, :data:`CSS`).

    ``images``: 'confusion', 'truth_confusion', 'class_areas', 'accuracy_bars', 'test_accuracy_bars' -> file
    name; 'mosaics' -> [(title, file name)].
    """
    run = report["run"]
    total = report["total"]
    evaluation = report.get("evaluation")
    metrics = report.get("metrics")
    names = {int(c["id"]): str(c["name"]) for c in report["legend"]}
    sources = ", ".join(f"{stage_label(k)} {v}" for k, v in run["map_sources"].items())
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>LCMS report {esc(run['project'])} {esc(run['season'])}</title>",
        f"<style>{CSS}{_page_css(run)}</style></head><body>",
        f"<h1>{esc(_title(run))} report — {esc(run['project'])}, season {esc(run['season'])}</h1>",
        _coverage_line(run),
        *_product_lines(run),
        f"<p>Run <code>{esc(run['run_id'])}</code>, generated {esc(run['generated_at'])}; maps from: "
        f"{esc(sources)} (tiles).</p>",
        _pdf_note(report),
    ]
    subset = bool(run.get("tile_subset"))
    n_tiles = fmt(run["n_tiles"]) + (f" of {fmt(run.get('n_project_tiles'))}" if subset else "")
    cards = [
        _card("tiles" + (" (subset)" if subset else ""), n_tiles),
        *([_card("gaps (failed tiles)", fmt(len(run["gaps"])))] if run.get("gaps") else []),
        _card("area of tiles (km²)", fmt(total["area_km2"], 2)),
        _card(
            "AOI area within these tiles (km²)" if subset else "AOI area (km²)",
            fmt(report["aoi"]["polygon_area_km2"], 2),
        ),
        _card("mapped no-data share", pct(total["no_data_share"])),
    ]
    # Change detection works on the primary product; another product's report has no change figures.
    with_changes = not run.get("primary_product") or run.get("product") == run["primary_product"]
    if with_changes:
        cards.append(_card("change area (km²)", fmt(total["changes"]["area_km2"], 3)))
    cards += _area_adjusted_card(report.get("area_adjusted"))
    if metrics:
        cards += [
            _card(f"overall accuracy, {TEST_SPLIT}", pct(metrics.get("overall_accuracy"))),
            _card("kappa, test split", fmt(metrics.get("kappa"))),
        ]
    if evaluation:
        cards += [
            _card("truth overall accuracy", pct(evaluation.get("overall_accuracy"))),
        ]
        if with_changes:
            cards += [
                _card("change precision", pct(evaluation.get("change_precision"))),
                _card("change recall", pct(evaluation.get("change_recall"))),
            ]
    previous = report.get("previous_season") or {}
    if previous.get("available"):
        cards.append(_card(f"class areas beyond ±{100 * previous['drift_threshold']:g} %", fmt(previous["n_drift"])))
    parts.append('<div class="cards">' + "".join(cards) + "</div>")
    parts += _gaps_section(run)
    parts += _readiness_section(run, images)
    parts += _inputs_section(report)

    parts.append('<section class="chapter"><h2>Maps</h2>')
    for title, name in images.get("mosaics", []):
        parts.append(_img(name, title, "map"))
    legend_rows = [[_swatch(c.get("color")) + esc(c["name"]), fmt(c["id"])] for c in report["legend"]]
    parts.append(table(["legend class", "id"], legend_rows))
    parts.append("</section>")

    parts.append('<section class="chapter"><h2>Class areas (all tiles of this report)</h2>')
    parts.append(_img(images.get("class_areas"), "class areas"))
    parts.append(_class_table(total["class_areas"]))
    parts += _area_adjusted_section(
        report, _accuracy_figure(images, "accuracy_bars", "user's and producer's accuracy with 95 % CI")
    )
    parts.append("</section>")

    parts.append('<section class="chapter"><h2>Regions</h2>')
    parts.append(f"<p>{esc(report['aoi']['method'])}</p>")
    region_rows = []
    for r in [*report["regions"], report["outside_aoi"]]:
        top = [c for c in r["class_areas"] if c["id"] != 0 and c["pixels"] > 0]
        top.sort(key=lambda c: -c["area_km2"])
        dominant = esc(top[0]["name"]) if top else "–"
        region_rows.append(
            [
                esc(r["name"]),
                fmt(r.get("polygon_area_km2"), 3),
                fmt(r["area_km2"], 3),
                pct(r["no_data_share"]),
                dominant,
                fmt(r["changes"]["area_km2"], 4),
                fmt(r["quality"]["valid_observations"]["mean"], 1),
            ]
        )
    parts.append(
        table(
            [
                "region",
                "polygon area (km²)",
                "mapped area (km²)",
                "no data",
                "dominant class",
                "change area (km²)",
                "mean valid obs.",
            ],
            region_rows,
        )
    )
    for r in report["regions"]:
        parts.append(f'<div class="keep"><h3>{esc(r["name"])}</h3>')
        parts.append(_class_table(r["class_areas"]) + "</div>")
    parts.append("</section>")

    parts.append('<section class="chapter">')
    parts += _changes_section(report)
    parts += _previous_season_section(report)
    parts.append("</section>")

    parts.append('<section class="chapter">')
    parts += _metrics_section(report, images, names)
    if evaluation:
        parts.append("<h2>Evaluation against synthetic truth</h2>")
        parts.append(
            table(
                ["figure", "value"],
                [
                    ["overall accuracy (tiles not used for training)", pct(evaluation.get("overall_accuracy"))],
                    ["tiles evaluated", fmt(evaluation.get("n_eval_tiles"))],
                    ["change precision (by area)", pct(evaluation.get("change_precision"))],
                    ["change recall (by area)", pct(evaluation.get("change_recall"))],
                    ["true change area (km²)", fmt(evaluation.get("true_change_area_km2"), 4)],
                    ["predicted change area (km²)", fmt(evaluation.get("predicted_change_area_km2"), 4)],
                ],
            )
        )
        parts += _change_timing_rows(evaluation.get("change_accuracy"))
        parts.append(_img(images.get("truth_confusion"), "confusion matrix against truth", "square"))
    parts.append("</section>")

    parts += _parcel_section(report.get("parcel_markers"))
    parts.append('<section class="chapter"><h2>Data quality</h2>')
    q = total["quality"]
    vo = q["valid_observations"]
    missing = {stage: v for stage, v in (report.get("missing_inputs") or {}).items() if v}
    corrupt = report.get("corrupt_inputs") or []
    if not missing and not corrupt:
        parts.append("<p><strong>Readiness:</strong> every tile of the report has every input.</p>")
    else:
        gaps = "; ".join(f"{stage_label(k)} on {fmt(len(v))} tile(s)" for k, v in missing.items())
        gaps += f"; {fmt(len(corrupt))} corrupt input(s)" if corrupt else ""
        parts.append(
            f'<p class="warn"><strong>Readiness:</strong> inputs missing: {esc(gaps.lstrip("; "))} (see Missing '
            "inputs above).</p>"
        )
    parts.append(
        table(
            ["figure", "value"],
            [
                ["tiles with features", fmt(q["n_tiles"])],
                ["valid observations per pixel: mean", fmt(vo["mean"], 2)],
                ["min / max", f"{fmt(vo['min'])} / {fmt(vo['max'])}"],
                *[[f"percentile {esc(k[1:])}", fmt(v)] for k, v in vo["percentiles"].items()],
                ["dates dropped (sum over tiles)", fmt(q["dates_dropped"])],
                ["pixels without valid observation", f"{fmt(q['no_data_pixels'])} ({pct(q['no_data_share'])})"],
            ],
        )
    )
    parts += _reference_section(report, names)
    parts.append("</section>")

    if report.get("tiles") is not None:
        parts.append("<section><h2>Tiles</h2>")
        parts.append(
            table(
                [
                    "tile",
                    "map",
                    "area (km²)",
                    "no data",
                    "mean valid obs.",
                    "dates dropped",
                    "labelled pixels",
                    "samples",
                    "change polygons",
                    "change area (km²)",
                ],
                [
                    [
                        esc(t["id"]),
                        esc(stage_label(t["map_source"])),
                        fmt(t["area_km2"], 3),
                        pct(t["no_data_share"]),
                        fmt(t["quality"]["valid_observations"]["mean"], 1),
                        fmt(t["quality"].get("dates_dropped")),
                        fmt(t["reference"].get("labelled_pixels")),
                        fmt(t["reference"].get("n_samples")),
                        fmt(t["changes"]["n_polygons"]),
                        fmt(t["changes"]["area_km2"], 4),
                    ]
                    for t in report["tiles"]
                ],
                left=2,
            )
        )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
