"""The report as a document: the previous-season comparison (map drift), the HTML printed to PDF by Chromium.

Pure parts (the comparison, its HTML, the PDF helpers with a fake Chromium) run everywhere; the prints
need Debian's chromium and poppler-utils (``make setup`` installs both) and skip, saying so, without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lcms_tasks.report import compare, html, pdf
from tests.unit.test_reporting import Fixture, _map_patch, _setup_project, html_text, raw_keys

CHROMIUM = pdf.find_chromium()
PDFINFO = shutil.which("pdfinfo")
PDFTOTEXT = shutil.which("pdftotext")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make system-deps)")
needs_poppler = pytest.mark.skipif(
    PDFINFO is None or PDFTOTEXT is None, reason="poppler-utils (pdfinfo, pdftotext) is not installed"
)


# -- the comparison, pure ---------------------------------------------------------------------------


def _rows(areas: dict[int, float], names: dict[int, str]) -> list[dict[str, Any]]:
    return [{"id": i, "name": names[i], "color": "#123456", "area_km2": a} for i, a in areas.items()]


def _fake_report(season: str, north: dict[int, float], south: dict[int, float], **run: Any) -> dict[str, Any]:
    """The parts of a report.json the comparison reads: run, legend, regions' and the AOI's class areas."""
    names = {0: "no data", 1: "crop", 2: "forest", 3: "water"}
    aoi = {i: north.get(i, 0.0) + south.get(i, 0.0) for i in sorted({*north, *south})}
    return {
        "run": {"season": season, "run_id": f"r-{season}", "n_tiles": 4, "tile_subset": None, **run},
        "legend": [{"id": i, "name": n} for i, n in names.items() if i],
        "regions": [
            {"name": "north", "class_areas": _rows(north, names)},
            {"name": "south", "class_areas": _rows(south, names)},
        ],
        "aoi": {"class_areas": _rows(aoi, names)},
    }


@pytest.mark.parametrize(
    ("previous", "current", "drift"),
    [
        (1.0, 1.0, False),
        (1.0, 1.15, False),  # +15 %: within the bound
        (1.0, 1.25, True),  # +25 %
        (1.0, 0.75, True),  # -25 %
        (1.0, 0.85, False),
        (0.0, 0.3, True),  # a class the previous map did not have
        (0.0, 0.0, False),
        (0.4, 0.0, True),  # a class gone
    ],
)
def test_class_change_beyond_the_threshold_is_drift(previous: float, current: float, drift: bool) -> None:
    row = compare.class_change(previous, current, 0.2)
    assert row["drift"] is drift
    assert row["change_km2"] == pytest.approx(current - previous)
    if previous:
        assert row["relative_change"] == pytest.approx((current - previous) / previous)
    else:
        assert row["relative_change"] is None and row["new_class"] is (current > 0)


def test_class_change_threshold_and_minimum_area_are_options() -> None:
    assert compare.class_change(1.0, 1.25, 0.3)["drift"] is False  # a wider bound
    assert compare.class_change(1.0, 1.25, 0.1)["drift"] is True
    # Small classes change by large fractions: below the minimum area they are never flagged.
    assert compare.class_change(0.01, 0.03, 0.2, min_area_km2=0.05)["drift"] is False
    assert compare.class_change(1.0, 2.0, 0.2, min_area_km2=0.05)["drift"] is True


def test_compare_class_areas_per_region_flags_drift() -> None:
    # no data (0) changes a lot and is not compared; water doubles in the north only; forest is new in the south.
    previous = _fake_report("2023", {0: 0.1, 1: 2.0, 3: 0.5}, {0: 0.1, 1: 3.0, 3: 1.0})
    current = _fake_report("2024", {0: 0.9, 1: 1.9, 3: 1.0}, {0: 0.1, 1: 2.8, 2: 0.2, 3: 1.05})
    block = compare.compare_class_areas(current, previous, threshold=0.2)
    assert block["available"] is True and block["season"] == "2023" and block["run_id"] == "r-2023"
    assert [z["region"] for z in block["regions"]] == ["north", "south", compare.AOI_ZONE]
    north = {c["name"]: c for c in block["regions"][0]["classes"]}
    assert set(north) == {"crop", "water"}  # no data left out, forest in neither season's north
    assert north["water"]["relative_change"] == pytest.approx(1.0) and north["water"]["drift"] is True
    assert north["crop"]["relative_change"] == pytest.approx(-0.05) and north["crop"]["drift"] is False
    drifting = {(d["region"], d["name"]) for d in block["drifting"]}
    # AOI: water 1.5 -> 2.05 (+37 %), forest 0 -> 0.2 (new); crop 5.0 -> 4.7 (-6 %).
    assert drifting == {
        ("north", "water"),
        ("south", "forest"),
        (compare.AOI_ZONE, "water"),
        (compare.AOI_ZONE, "forest"),
    }
    assert block["n_drift"] == 4 == sum(z["n_drift"] for z in block["regions"])
    forest = next(c for c in block["regions"][1]["classes"] if c["name"] == "forest")
    assert forest["new_class"] is True and forest["relative_change"] is None and forest["previous_km2"] == 0.0
    # The same pair with a wider bound: only what is new or more than doubles.
    wide = compare.compare_class_areas(current, previous, threshold=0.5)
    assert {(d["region"], d["name"]) for d in wide["drifting"]} == {
        ("north", "water"),
        ("south", "forest"),
        (compare.AOI_ZONE, "forest"),
    }
    assert json.loads(json.dumps(block, allow_nan=False)) == block  # valid JSON: no infinities
    with pytest.raises(ValueError, match="positive fraction"):
        compare.compare_class_areas(current, previous, threshold=0.0)


def test_compare_notes_what_makes_areas_less_comparable() -> None:
    previous = _fake_report("2023", {1: 2.0}, {1: 3.0}, tile_subset=["a", "b"], n_tiles=2)
    previous["legend"][0]["name"] = "cropland"
    previous["regions"].append({"name": "east", "class_areas": []})
    current = _fake_report("2024", {1: 2.0}, {1: 3.5})
    notes = compare.compare_class_areas(current, previous)["notes"]
    assert any("other tiles" in n and "a subset of 2 tiles" in n and "all 4 tiles" in n for n in notes)
    assert any("legends differ" in n and "1: cropland → crop" in n for n in notes)
    assert any("only in the previous season's report: east" in n for n in notes)
    assert any(n.startswith("south: the area with a class") for n in notes)
    assert not any(n.startswith("north:") for n in notes)  # same mapped area: nothing to say


def _section(block: dict[str, Any]) -> str:
    return "\n".join(html._previous_season_section({"run": {"season": "2024"}, "previous_season": block}))


def test_previous_season_html_highlights_drift_rows() -> None:
    previous = _fake_report("2023", {1: 2.0, 3: 0.5}, {1: 3.0, 3: 1.0})
    current = _fake_report("2024", {1: 1.9, 3: 1.0}, {1: 2.9, 3: 1.02})
    page = _section(compare.compare_class_areas(current, previous, threshold=0.2))
    highlighted = re.findall(r'<tr class="drift">(.*?)</tr>', page)
    # Water in the north (+100 %) and in the AOI (+40 %); not in the south (+2 %), crop nowhere.
    assert len(highlighted) == 2 and all(">water</span>" in row for row in highlighted)
    assert all("possible map drift" in row for row in highlighted)
    assert "+100.0 %" in highlighted[0]
    text = html_text(page)
    assert "2 class area(s) beyond ±20 %: north: water +100.0 % (0.5000 → 1.0000 km²)" in text
    assert "season 2023 (km²) season 2024 (km²) change (km²) change note" in text
    assert "south: water" not in text
    calm = _section(compare.compare_class_areas(current, previous, threshold=1.5))
    assert 'class="drift"' not in calm and "No class area changed by more than 150 %" in html_text(calm)
    none = _section(compare.unavailable("season 2023 is the first season of the config"))
    assert html_text(none) == (
        "Comparison with the previous season No comparison with a previous season: season 2023 is the first "
        "season of the config."
    )


# -- printing, with a fake Chromium -------------------------------------------------------------------


def _page(tmp_path: Path) -> Path:
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><html><body><h1>one</h1></body></html>")
    return page


def _fake_chromium(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-chromium"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def test_missing_chromium_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = _page(tmp_path)
    with pytest.raises(pdf.ChromiumNotFoundError, match=r"page\.html: cannot print to .*out\.pdf: no Chromium.*"):
        pdf.html_to_pdf(page, tmp_path / "out.pdf", chromium=str(tmp_path / "absent"))
    monkeypatch.setenv(pdf.CHROMIUM_ENV, str(tmp_path / "absent-too"))
    assert pdf.find_chromium() is None  # a named binary that does not exist is not replaced by another
    with pytest.raises(FileNotFoundError, match=r"\$LCMS_CHROMIUM=.*absent-too.* is not an executable"):
        pdf.html_to_pdf(page, tmp_path / "out.pdf")
    assert not (tmp_path / "out.pdf").exists()


def test_a_failing_chromium_leaves_no_pdf(tmp_path: Path) -> None:
    page, target = _page(tmp_path), tmp_path / "out.pdf"
    target.write_bytes(b"%PDF-old")
    # Writes half a file, complains (among D-Bus noise) and fails.
    broken = _fake_chromium(
        tmp_path,
        'for a in "$@"; do case "$a" in --print-to-pdf=*) printf "%%PDF-1.4 half" > "${a#--print-to-pdf=}";; esac; '
        'done\necho "[1:2:ERROR:dbus/bus.cc:405] Failed to connect to the bus" >&2\necho "Aw, snap: out of memory" >&2'
        "\nexit 3",
    )
    with pytest.raises(
        pdf.PdfRenderError, match=r"page\.html: Chromium .* \(exit status 3\): Aw, snap: out of memory$"
    ):
        pdf.html_to_pdf(page, target, chromium=broken)
    assert target.read_bytes() == b"%PDF-old"  # the previous PDF untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-chromium", "out.pdf", "page.html"]  # no temp file
    silent = _fake_chromium(tmp_path, "exit 0")  # succeeds without writing anything
    with pytest.raises(pdf.PdfRenderError, match="no PDF written"):
        pdf.html_to_pdf(page, target, chromium=silent)
    slow = _fake_chromium(tmp_path, "sleep 5")
    with pytest.raises(pdf.PdfRenderError, match=r"did not print it within 0\.3 s"):
        pdf.html_to_pdf(page, target, chromium=slow, timeout=0.3)
    with pytest.raises(pdf.PdfRenderError, match="the page does not exist"):
        pdf.html_to_pdf(tmp_path / "nothing.html", target, chromium=silent)


def test_page_count_without_pdfinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >>"]
    objects += [b"<< /Type /Page /Parent 2 0 R >>", b"<</Type/Page/Parent 2 0 R>>", b"<< /Type /Page\n>>"]
    body = b"%PDF-1.4\n" + b"".join(b"%d 0 obj\n%s\nendobj\n" % (i + 1, o) for i, o in enumerate(objects))
    (tmp_path / "three.pdf").write_bytes(body)
    (tmp_path / "not.pdf").write_bytes(b"<html>")
    real_which = shutil.which
    monkeypatch.setattr(pdf.shutil, "which", lambda name: None if name == "pdfinfo" else real_which(name))
    assert pdf.page_count(tmp_path / "three.pdf") == 3
    with pytest.raises(ValueError, match=r"not\.pdf: not a PDF file"):
        pdf.page_count(tmp_path / "not.pdf")


# -- the reporting stage -------------------------------------------------------------------------------


def _light_project(tmp_path: Path, reporting: dict[str, Any]) -> Any:
    """A context of a 2 x 2-tile project with one post-processed map (the rest missing) and these options."""
    from lcms_tasks import eopatch
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = _setup_project(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw.setdefault("stages", {})["reporting"] = reporting
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ctx = RunContext.create(load_config(path), season="2024", run_id="r")
    tile = project_tiles(ctx.config)[0]
    eopatch.save(
        ctx.storage,
        ctx.tile_uri("postprocessing", tile.id),
        _map_patch(tile, np.ones(tile.shape, np.uint8), np.ones(tile.shape)),
        meta=ctx.marker_meta("postprocessing", tile.id, {}),
    )
    return ctx


def _written(ctx: Any) -> tuple[dict[str, Any], Path]:
    uri = ctx.run_uri("reporting", "report")
    return json.loads(ctx.storage.read_bytes(f"{uri}/report.json")), ctx.storage.local_path(uri)


def test_pdf_true_without_chromium_fails_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lcms_tasks.errors import StageError
    from lcms_tasks.stages import reporting

    ctx = _light_project(tmp_path, {"pdf": True, "chromium": str(tmp_path / "no-chromium")})

    def read_nothing(*args: Any) -> None:
        raise AssertionError("the inputs were read before the missing Chromium was noticed")

    monkeypatch.setattr(reporting, "build_report", read_nothing)
    with pytest.raises(StageError, match=r"season 2024: pdf is true but there is no Chromium .*no-chromium.*"):
        reporting.run(ctx)
    assert not ctx.storage.exists(ctx.run_uri("reporting", "report"))


def test_pdf_auto_without_chromium_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lcms_tasks.stages import reporting

    monkeypatch.setenv(pdf.CHROMIUM_ENV, str(tmp_path / "no-chromium"))
    ctx = _light_project(tmp_path, {})  # pdf: auto is the default
    reporting.run(ctx)
    rep, folder = _written(ctx)
    assert rep["pdf"]["option"] == "auto" and rep["pdf"]["made"] is False
    assert rep["pdf"]["reason"].startswith("no Chromium to print the PDF: $LCMS_CHROMIUM=")
    assert not (folder / "report.pdf").exists()
    marker = ctx.storage.read_marker(ctx.run_uri("reporting", "report"))
    assert marker["pdf"] == {"made": False, "reason": rep["pdf"]["reason"]}
    page = (folder / "report.html").read_text()
    assert f"No PDF of this report: {rep['pdf']['reason']}." in html_text(page)
    assert raw_keys(page, ["r"]) == []
    # pdf: false says that too; the previous season has no report: said as well.
    ctx = _light_project(tmp_path / "off", {"pdf": False})
    reporting.run(ctx)
    rep, folder = _written(ctx)
    assert rep["pdf"] == {
        "option": False,
        "made": False,
        "reason": "switched off (the reporting stage's pdf option is false)",
    }
    assert rep["previous_season"]["available"] is False
    assert rep["previous_season"]["reason"].startswith("the previous season, 2023, has no report yet")
    assert "No comparison with a previous season: the previous season, 2023, has no report yet" in html_text(
        (folder / "report.html").read_text()
    )


def test_pdf_auto_with_a_failing_chromium_still_reports(tmp_path: Path) -> None:
    from lcms_tasks.report.pdf import PdfRenderError
    from lcms_tasks.stages import reporting

    broken = _fake_chromium(tmp_path, 'echo "cannot open display" >&2; exit 1')
    ctx = _light_project(tmp_path / "auto", {"chromium": broken})
    reporting.run(ctx)
    rep, folder = _written(ctx)
    assert rep["pdf"]["made"] is False and rep["pdf"]["reason"].startswith("Chromium failed: ")
    assert "cannot open display" in rep["pdf"]["reason"] and not (folder / "report.pdf").exists()
    # The page named is the published one, not the staging folder it was printed from.
    uri = ctx.run_uri("reporting", "report")
    assert f"Chromium failed: {uri}/report.html: Chromium ({broken}) failed" in rep["pdf"]["reason"]
    assert "staging" not in rep["pdf"]["reason"]
    assert "No PDF of this report: Chromium failed" in html_text((folder / "report.html").read_text())
    ctx = _light_project(tmp_path / "true", {"chromium": broken, "pdf": True})
    with pytest.raises(
        PdfRenderError, match=r"^reporting: file://\S+/2024/reporting/_run/report/report\.pdf: .*display"
    ):
        reporting.run(ctx)
    assert not ctx.storage.exists(ctx.run_uri("reporting", "report"))


def test_previous_season_report_missing_first_or_unreadable(tmp_path: Path) -> None:
    from lcms_tasks.context import RunContext
    from lcms_tasks.stages import reporting

    ctx = _light_project(tmp_path, {})
    first = RunContext.create(ctx.config, season="2023", run_id="r")
    assert reporting.previous_season(first, {}) == {
        "available": False,
        "season": None,
        "uri": None,
        "reason": "season 2023 is the first season of the config (seasons 2023, 2024): there is no previous season "
        "to compare with",
    }
    uri = ctx.run_uri("reporting", "report", season="2023")
    with ctx.storage.writing_dir(uri, {"stage": "reporting"}) as folder:
        (folder / "report.json").write_text("{not json")
    block = reporting.previous_season(ctx, {})
    assert block["available"] is False and block["uri"] == uri
    assert block["reason"].startswith(f"the previous season's report {uri}/report.json cannot be read: JSONDecodeError")


# -- the whole report printed, two seasons ---------------------------------------------------------------


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Fixture, dict[str, Any], Path]:
    """The reporting fixture's project reported for 2023 (its maps with half the water as grassland), then 2024."""
    from lcms_tasks import eopatch
    from lcms_tasks.context import RunContext
    from lcms_tasks.stages import reporting

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make system-deps)")
    fixture = Fixture(tmp_path_factory.mktemp("report-pdf"))
    before = RunContext.create(fixture.cfg, season="2023", run_id="rep-2023")
    for tile in fixture.tiles:
        classes = fixture.maps[tile.id].copy()
        rows = np.arange(classes.shape[0])[:, None] % 2 == 0
        classes[(classes == 4) & rows] = 3
        eopatch.save(
            before.storage,
            before.tile_uri("postprocessing", tile.id),
            _map_patch(tile, classes, np.full(tile.shape, 0.8)),
            meta=before.marker_meta("postprocessing", tile.id, {}),
        )
    reporting.run(before)
    uri = reporting.run(fixture.ctx)[0]
    folder = fixture.ctx.storage.local_path(uri)
    return fixture, json.loads((folder / "report.json").read_text()), folder


def _pdf_text(path: Path, page: int | None = None) -> str:
    pages = ["-f", str(page), "-l", str(page)] if page else []
    out = subprocess.run(
        [str(PDFTOTEXT), "-layout", *pages, str(path), "-"], capture_output=True, text=True, check=True
    )
    return out.stdout


@needs_chromium
@needs_poppler
def test_report_pdf_has_every_part(printed: tuple[Fixture, dict[str, Any], Path]) -> None:
    fixture, rep, folder = printed
    path = folder / "report.pdf"
    assert path.read_bytes()[:5] == b"%PDF-"
    block = rep["pdf"]
    assert block["made"] is True and block["option"] == "auto" and block["file"] == "report.pdf"
    assert block["uri"] == f"{fixture.ctx.run_uri('reporting', 'report')}/report.pdf"
    assert block["bytes"] == path.stat().st_size
    info = subprocess.run([str(PDFINFO), str(path)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))  # type: ignore[union-attr]
    assert block["pages"] == pages
    assert "A4" in info
    assert fixture.ctx.storage.read_marker(fixture.ctx.run_uri("reporting", "report"))["pdf"]["pages"] == pages
    page = (folder / "report.html").read_text()
    # Each chapter starts a page, after the cover: at least that many pages, each chapter at the top of one.
    chapters = re.findall(r'<section class="chapter"><h2>([^<]+)</h2>', page)
    chapters += re.findall(r'<section class="chapter">\s*<h2>([^<]+)</h2>', page)
    assert len(set(chapters)) >= 6
    assert pages >= len(set(chapters)) + 1
    tops = [_pdf_text(path, i).strip().splitlines()[0].strip() for i in range(1, pages + 1)]
    for heading in set(chapters):
        assert html_text(heading).split(":")[0] in {t.split(":")[0] for t in tops}, (heading, tops)
    # Page numbers and the project in every page's footer.
    for i in (1, pages):
        text = _pdf_text(path, i)
        assert f"page {i} of {pages}" in text and "LCMS land cover report — testproj, season 2024" in text
    text = re.sub(r"\s+", " ", _pdf_text(path))
    for part in (
        "Maps",
        "legend class",
        "Class areas and accuracies with 95 % confidence intervals",
        "overall accuracy (95 % CI)",
        "By transition and region",
        "Comparison with the previous season",
        "possible map drift",
        "Model test metrics",
        "Evaluation against synthetic truth",
        "Data quality",
        "Readiness:",
        "Reference data",
        "Tiles",
    ):
        assert part in text, part
    # The figures are in it: maps, class areas, both confusion heatmaps, both accuracy bar charts.
    figures = set(re.findall(r'<img src="([^"]+)"', page))
    assert {"accuracy_bars.png", "test_accuracy_bars.png", "confusion.png", "truth_confusion.png"} <= figures
    listed = subprocess.run(
        [str(Path(str(PDFINFO)).with_name("pdfimages")), "-list", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[2:]
    assert sum(1 for line in listed if line.split()[2] == "image") >= len(figures)
    # The fallback page counter agrees with pdfinfo on Chromium's PDFs.
    with pytest.MonkeyPatch.context() as mp:
        real_which = shutil.which
        mp.setattr(pdf.shutil, "which", lambda name: None if name == "pdfinfo" else real_which(name))
        assert pdf.page_count(path) == pages


@needs_chromium
def test_report_compares_with_the_previous_season(printed: tuple[Fixture, dict[str, Any], Path]) -> None:
    fixture, rep, folder = printed
    block = rep["previous_season"]
    assert block["available"] is True and block["season"] == "2023" and block["run_id"] == "rep-2023"
    assert block["uri"] == fixture.ctx.run_uri("reporting", "report", season="2023")
    assert block["drift_threshold"] == fixture.cfg.stages.reporting.drift_threshold == 0.2
    previous = fixture.ctx.storage.read_json(f"{block['uri']}/report.json")
    zones = {z["region"]: z for z in block["regions"]}
    assert list(zones) == ["north", "south", compare.AOI_ZONE]

    def areas(report: dict[str, Any]) -> dict[str, dict[int, float]]:
        rows = {r["name"]: r["class_areas"] for r in report["regions"]} | {
            compare.AOI_ZONE: report["aoi"]["class_areas"]
        }
        return {zone: {c["id"]: c["area_km2"] for c in cs if c["id"] != 0} for zone, cs in rows.items()}

    before, now = areas(previous), areas(rep)
    for zone, classes in now.items():
        for cid, area in classes.items():
            if area == 0 and before[zone][cid] == 0:
                continue
            row = next(x for x in zones[zone]["classes"] if x["id"] == cid)
            assert row["previous_km2"] == pytest.approx(before[zone][cid])
            assert row["current_km2"] == pytest.approx(area)
            expected = before[zone][cid] == 0 or abs(area / before[zone][cid] - 1) > 0.2
            assert row["drift"] is expected, (zone, cid)
    # Half the water was grassland in 2023: water about doubled everywhere (drift), grassland shrank less.
    drifting = {(d["region"], d["name"]) for d in block["drifting"]}
    assert {(z, "water") for z in zones} <= drifting
    assert not any(name == "grassland" for _, name in drifting)
    assert rep["regions"][0]["name"] == "north"
    page = (folder / "report.html").read_text()
    assert len(re.findall(r'<tr class="drift">', page)) == block["n_drift"]
    text = html_text(page)
    assert f"{block['n_drift']} class area(s) beyond ±20 %" in text
    assert f"{block['n_drift']} class areas beyond ±20 %" in text  # the card
    run_ids = [rep["run"]["run_id"], "rep-2023", *[r for ids in rep["run"]["upstream_run_ids"].values() for r in ids]]
    assert raw_keys(page, run_ids) == []
    assert os.path.exists(folder / "report.pdf")
