"""HTML rendering of report.json and its matplotlib plots (PNG files next to report.html).

Plots use the Agg backend only (set inside each function, before pyplot is
imported) so reporting runs on headless workers. Every string that comes from
data (class, region, tile names, error texts) is HTML-escaped.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcms_tasks.report.stats import ClassInfo

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
        ax.tick_params(labelsize=7)
        handles = [Patch(facecolor=NO_DATA_RGB, edgecolor="black", label="no data")]
        handles += [Patch(facecolor=_hex_rgb(c.color), edgecolor="black", label=c.name) for c in legend]
        if changes:
            handles.append(Patch(facecolor="none", edgecolor="black", label="change"))
        if regions:
            handles.append(Patch(facecolor="none", edgecolor="red", linestyle="--", label="region"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=True)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
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
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card .v { font-size: 1.5em; font-weight: 600; } .card .k { color: #666; font-size: 0.85em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #444; vertical-align: middle;
  margin-right: 0.4em; }
.warn { color: #a04000; } img { max-width: 100%; border: 1px solid #eee; }
"""


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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """An HTML table; ``rows`` cells are already-escaped HTML; the first ``left`` columns align left."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _swatch(color: str | None) -> str:
    return f'<span class="swatch" style="background:{esc(color or "#737373")}"></span>'


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="v">{value}</div><div class="k">{esc(key)}</div></div>'


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


def _img(name: str | None, alt: str) -> str:
    return f'<p><img src="{esc(name)}" alt="{esc(alt)}"></p>' if name else ""


def render(report: Mapping[str, Any], images: Mapping[str, Any]) -> str:
    """The report page. ``images``: 'confusion', 'class_areas' -> file name; 'mosaics' -> [(title, file name)]."""
    run = report["run"]
    total = report["total"]
    metrics = report.get("metrics")
    evaluation = report.get("evaluation")
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>LCMS report {esc(run['project'])} {esc(run['season'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Land cover report — {esc(run['project'])}, season {esc(run['season'])}</h1>",
        f"<p>Run <code>{esc(run['run_id'])}</code>, generated {esc(run['generated_at'])}; map source: "
        f"{esc(', '.join(f'{k}: {v}' for k, v in run['map_sources'].items()))}.</p>",
    ]
    # Headline figures
    cards = [
        _card("tiles", fmt(run["n_tiles"])),
        _card("area of tiles (km²)", fmt(total["area_km2"], 2)),
        _card("AOI area (km²)", fmt(report["aoi"]["polygon_area_km2"], 2)),
        _card("mapped no-data share", pct(total["no_data_share"])),
        _card("change area (km²)", fmt(total["changes"]["area_km2"], 3)),
    ]
    if metrics:
        cards += [
            _card("test overall accuracy", pct(metrics.get("overall_accuracy"))),
            _card("test kappa", fmt(metrics.get("kappa"))),
        ]
    if evaluation:
        cards += [
            _card("truth overall accuracy", pct(evaluation.get("overall_accuracy"))),
            _card("change precision", pct(evaluation.get("change_precision"))),
            _card("change recall", pct(evaluation.get("change_recall"))),
        ]
    parts.append('<div class="cards">' + "".join(cards) + "</div>")
    missing = report.get("missing_inputs") or {}
    if any(missing.values()):
        items = "".join(f"<li>{esc(stage)}: {esc(', '.join(map(str, v)))}</li>" for stage, v in missing.items() if v)
        parts.append(f'<h2>Missing inputs</h2><ul class="warn">{items}</ul>')

    parts.append("<h2>Maps</h2>")
    for title, name in images.get("mosaics", []):
        parts.append(_img(name, title))
    legend_rows = [[_swatch(c.get("color")) + esc(c["name"]), fmt(c["id"])] for c in report["legend"]]
    parts.append(table(["legend class", "id"], legend_rows))

    parts.append("<h2>Class areas (all tiles)</h2>")
    parts.append(_img(images.get("class_areas"), "class areas"))
    parts.append(_class_table(total["class_areas"]))

    parts.append("<h2>Regions</h2>")
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
        parts.append(f"<h3>{esc(r['name'])}</h3>")
        parts.append(_class_table(r["class_areas"]))

    parts.append("<h2>Changes</h2>")
    ch = total["changes"]
    parts.append(
        f"<p>{fmt(ch['n_polygons'])} change polygons, {fmt(ch['area_km2'], 4)} km² "
        f"(tiles with change data: {fmt(ch['n_tiles'])}).</p>"
    )
    parts.append(_transition_table(ch["transitions"]))

    parts.append("<h2>Model test metrics</h2>")
    if metrics:
        parts.append(
            f"<p>Overall accuracy {pct(metrics.get('overall_accuracy'))}, kappa {fmt(metrics.get('kappa'))}.</p>"
        )
        parts.append(_img(images.get("confusion"), "confusion matrix"))
        pc = metrics.get("per_class") or {}
        parts.append(
            table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [
                        esc(v.get("name", k)),
                        fmt(v.get("precision")),
                        fmt(v.get("recall")),
                        fmt(v.get("f1")),
                        fmt(v.get("support")),
                    ]
                    for k, v in pc.items()
                ],
            )
        )
    else:
        parts.append('<p class="warn">No training metrics available.</p>')

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
        parts.append(_img(images.get("truth_confusion"), "confusion matrix against truth"))

    parts.append("<h2>Data quality</h2>")
    q = total["quality"]
    vo = q["valid_observations"]
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
    parts.append("<h2>Reference data</h2>")
    ref = total["reference"]
    parts.append(
        table(
            ["figure", "value"],
            [
                ["tiles with reference", fmt(ref["n_tiles_with_reference"])],
                ["tiles with training samples", fmt(ref["n_tiles_sampled"])],
                ["tiles skipped", esc(", ".join(f"{k} ({v})" for k, v in ref["skipped_reasons"].items()) or "none")],
                ["samples", fmt(ref["n_samples"])],
                *[[esc(k), fmt(v)] for k, v in sorted(ref["add_reference_totals"].items()) if not isinstance(v, dict)],
            ],
        )
    )

    if report.get("tiles") is not None:
        parts.append("<h2>Tiles</h2>")
        parts.append(
            table(
                [
                    "tile",
                    "map",
                    "area (km²)",
                    "no data",
                    "mean valid obs.",
                    "dates dropped",
                    "samples",
                    "change polygons",
                    "change area (km²)",
                ],
                [
                    [
                        esc(t["id"]),
                        esc(t["map_source"]),
                        fmt(t["area_km2"], 3),
                        pct(t["no_data_share"]),
                        fmt(t["quality"]["valid_observations"]["mean"], 1),
                        fmt(t["quality"].get("dates_dropped")),
                        fmt(t["reference"].get("n_samples")),
                        fmt(t["changes"]["n_polygons"]),
                        fmt(t["changes"]["area_km2"], 4),
                    ]
                    for t in report["tiles"]
                ],
                left=2,
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts)
