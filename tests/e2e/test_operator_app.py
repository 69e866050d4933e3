"""The operator application in a real browser, against the real service, on a project the real stages published.

A 2 x 2-tile project (64 px tiles) runs from download to change_detection for 2023 and 2024 and is
published; publishing loads 2024's changes into a fresh change store database (``store_db``). Users are
made with ``lcms users add`` (password on standard input) and the service runs under uvicorn in a child
process (:class:`~lcms_service.testing.ServiceProcess`). Headless Chromium (Debian's, driven by
Playwright) then does what an operator does:

* logs in; the Viewer shows 2024's map; switching to 2023 asks for 2023's tiles; the swipe against 2024
  is dragged to a quarter of the width; a click on the map shows both seasons' class and confidence as
  ``/api/pixel`` answered, and the NDVI plot;
* in the Validation Tool, works down the queue (priority order): confirms the first change with ``c``,
  rejects the second with ``r`` and a comment, corrects the third (``e``: another class after, one
  vertex dragged outwards, ``Ctrl+Enter``); a second operator then decides the fourth through the API, so
  the first operator's ``c`` on it gets the 409, which the page shows with the current state and a
  reload; a viewer can read but not decide.

Parcel checks (a third test): the 2024 parcel markers of the crop type product are computed with ``lcms
parcels markers`` (a share of the synthetic declarations naming another crop); publishing the season again
loads the flagged parcels into the queue; the validator switches the queue to parcel checks, sees each as
"Declared X · predicted Y" over the season's imagery, land cover map and crop type map, confirms one,
rejects one and corrects one to a third crop (the declared crop and the outline are not editable), and the
store holds exactly those decisions.

In Assessment (a second test on the same project and service), a 2024 sample design is drawn with
``lcms accuracy design`` into the season's accuracy folder; the validator labels two points with the keys
``1`` and ``2`` from the imagery alone (the page must ask for no map, pixel or change data), the store
holds exactly those labels and an admin's export writes them to labels.csv.

The store and the audit table (``lcms.decisions``) must then hold exactly those decisions, every request
of the page must have gone to the service itself (no CDN), and the page must have thrown no error.
Screenshots of each step are saved under the test's temporary folder (printed at the end).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from lcms_service.testing import ServiceProcess
from tests.chain_helpers import CHROMIUM, CHROMIUM_FLAGS, publish_season, run_two_seasons
from tests.store_fixtures import store_db  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.slow

OPERATOR, SECOND, READER = "alice", "bob", "carol"
PASSWORDS = {OPERATOR: "alice-validates-2024", SECOND: "bob-validates-2024", READER: "carol-only-reads-2024"}
ROLES = {OPERATOR: "validator", SECOND: "validator", READER: "viewer"}
REJECT_COMMENT = "bare soil after harvest, not a change"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, store_db: str) -> Path:  # noqa: F811
    """The published 2-season project; its config names the change store, which publishing filled."""
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("operator-project")
    write_aoi(folder / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    cfg["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
        "prediction": {"model_season": "2023"},  # one model maps both seasons
    }
    # A second product, crop type inside the land cover map's cropland (its own model, maps and collection).
    cfg["products"] = {
        "land_cover": {"legend": "land_cover"},
        "crop_type": {"legend": "crop_type", "mask": {"product": "land_cover", "classes": ["cropland"]}},
    }
    cfg["database"] = {"url": store_db}
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_two_seasons(path)
    for season in ("2023", "2024"):
        publish_season(path, season)  # 2024's finalize loads its changes into the store
    assert len(store_rows(store_db, "SELECT id FROM lcms.changes")) >= 5, "too few changes to validate"
    return path


def shots_folder(*, fresh: bool = False) -> Path:
    """Where the screenshots go, kept after the run (CI can upload them): $LCMS_TEST_ARTIFACTS/operator-app
    (default <repo>/test-artifacts/operator-app); ``fresh`` empties it first."""
    artefacts = Path(os.environ.get("LCMS_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    shots = artefacts / "operator-app"
    if fresh:
        shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@contextlib.contextmanager
def chromium_page(requests: list[str], page_errors: list[str], console_errors: list[str]) -> Iterator[Any]:
    """A page of headless Debian Chromium (1440 x 900) recording its requests, script errors and console errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(30_000)
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            yield page
        finally:
            browser.close()


def store_rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def service(project: Path, store_db: str) -> Iterator[ServiceProcess]:  # noqa: F811
    lcms = Path(sys.executable).with_name("lcms")
    for name, role in ROLES.items():  # as the README says: `lcms users add NAME --role ROLE --config CONFIG`
        proc = subprocess.run(
            [str(lcms), "users", "add", name, "--role", role, "--config", str(project)],
            input=PASSWORDS[name] + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    env = {"LCMS_CONFIG": str(project), "LCMS_SERVICE_EMBEDDED_DATABASE": "false"}
    with ServiceProcess(store_db, env=env) as svc:
        yield svc


class ApiClient:
    """A second operator talking to the API directly (own cookie jar and CSRF token)."""

    def __init__(self, base: str, name: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.csrf = self.call("POST", "/api/auth/login", {"name": name, "password": PASSWORDS[name]})["csrf_token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if method != "GET" and getattr(self, "csrf", None):
            headers["X-CSRF-Token"] = self.csrf
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with self.opener.open(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")


def test_operator_app_in_the_browser(service: ServiceProcess, store_db: str, tmp_path: Path) -> None:  # noqa: F811
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian's chromium package; `make setup` installs it as root)")
    from playwright.sync_api import Page, expect

    shots = shots_folder(fresh=True)
    saved: list[Path] = []
    requests: list[str] = []
    page_errors: list[str] = []
    console_errors: list[str] = []

    def shot(page: Page, name: str) -> None:
        path = shots / f"{len(saved) + 1:02d}-{name}.png"
        page.screenshot(path=str(path))
        saved.append(path)

    queue = [
        str(r[0])
        for r in store_rows(
            store_db,
            "SELECT id FROM lcms.changes WHERE status = 'detected' AND kind = 'change' "
            "ORDER BY area_m2 * (1 - confidence) DESC",
        )
    ]
    config = yaml.safe_load(Path(service.extra_env["LCMS_CONFIG"]).read_text())
    legend = {int(c["id"]): c["name"] for c in config["legends"]["land_cover"] if int(c["id"]) != 0}
    crop_legend = [c["name"] for c in config["legends"]["crop_type"]]

    with chromium_page(requests, page_errors, console_errors) as page:
        try:
            # ---- log in
            page.goto(f"{service.url}/")
            expect(page.locator("#view-login")).to_be_visible()
            shot(page, "login")
            page.get_by_label("User name").fill(OPERATOR)
            page.get_by_label("Password").fill(PASSWORDS[OPERATOR])
            with page.expect_response(lambda r: "/api/maps/2024/CLASS/tiles/" in r.url and r.status == 200):
                page.get_by_role("button", name="Log in").click()
            expect(page.locator("#user-name")).to_have_text(OPERATOR)
            expect(page.locator("#user-role")).to_have_text("validator")
            expect(page.locator("#view-viewer")).to_be_visible()
            expect(page.locator("#legend-list li")).to_have_count(len(legend))
            page.wait_for_timeout(1500)  # let the tiles draw
            shot(page, "viewer-2024")

            # ---- switch season
            with page.expect_response(lambda r: "/api/maps/2023/CLASS/tiles/" in r.url and r.status == 200):
                page.locator("#v-season").select_option("2023")
            expect(page.locator("#label-a")).to_contain_text("2023")

            # ---- swipe: 2023 (left) against 2024 (right), dragged to a quarter of the width
            page.get_by_label("Compare with").select_option("map")
            page.locator("#v-compare-season").select_option("2024")
            page.get_by_label("Mode").select_option("swipe")
            swiper = page.locator(".maplibregl-compare .compare-swiper-vertical")
            expect(swiper).to_be_visible()
            expect(page.locator("#label-b")).to_contain_text("2024")
            maps_box = page.locator("#viewer-maps").bounding_box()
            handle = swiper.bounding_box()
            assert maps_box and handle
            start_x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
            assert abs(start_x - (maps_box["x"] + maps_box["width"] / 2)) < 5, "the swipe does not start in the middle"
            target_x = maps_box["x"] + maps_box["width"] / 4
            page.mouse.move(start_x, y)
            page.mouse.down()
            page.mouse.move(target_x, y, steps=10)
            page.mouse.up()
            clip = page.locator("#map-a").evaluate("el => el.style.clip")
            assert (
                clip.startswith("rect(0px, ")
                and abs(float(clip.split(",")[1].strip()[:-2]) - maps_box["width"] / 4) < 3
            )
            expect(page.locator("#v-swipe")).to_have_value("25")
            page.wait_for_timeout(1000)
            shot(page, "viewer-swipe")

            # ---- click a pixel (on the 2024 side, away from the swipe handle)
            with page.expect_response(lambda r: "/api/pixel?" in r.url) as pixel_answer:
                page.mouse.click(maps_box["x"] + maps_box["width"] * 0.6, maps_box["y"] + maps_box["height"] * 0.45)
            assert pixel_answer.value.status == 200, pixel_answer.value.text()
            pixel = pixel_answer.value.json()
            assert set(pixel["seasons"]) == {"2023", "2024"}
            for season, value in pixel["seasons"].items():
                row = page.locator(f"#pixel-body tr[data-season='{season}']")
                expect(row.locator(".pixel-class")).to_have_text(value["class_name"])
                percent = math.floor(value["confidence"] * 100 + 0.5)  # as the page's Math.round
                expect(row.locator(".pixel-confidence")).to_have_text(f"{percent} %")
            expect(page.locator("#ndvi-plot polyline")).to_have_count(
                sum(1 for s in pixel["ndvi"].values() if any(p["ndvi"] is not None for p in s))
            )
            shot(page, "viewer-pixel")

            # ---- the other product: crop type inside cropland, with its own legend and no change layer
            with (
                page.expect_response(
                    lambda r: "/CLASS/tiles/" in r.url and "product=crop_type" in r.url and r.status == 200
                ),
                page.expect_response(lambda r: "/api/pixel?" in r.url and "product=crop_type" in r.url) as crop_px,
            ):
                page.locator("#v-product").select_option("crop_type")
            # The clicked pixel is read again for the product shown: a crop or no data, never a land cover class.
            assert crop_px.value.status == 200, crop_px.value.text()
            for season, value in crop_px.value.json()["seasons"].items():
                row = page.locator("#pixel-body tr").filter(has_text=season)
                expect(row).to_contain_text(value["class_name"] if value["class_name"] else "no data")
                assert value["class_name"] in (None, *crop_legend)
            expect(page.locator("#legend-list li")).to_have_count(len(crop_legend))
            expect(page.locator("#legend-list")).to_contain_text(crop_legend[0])
            expect(page.locator("#v-band option[value='CHANGE']")).to_be_disabled()
            expect(page.locator("#label-a")).to_contain_text("crop type")
            page.wait_for_timeout(1000)
            shot(page, "viewer-crop-type")
            page.locator("#v-product").select_option("land_cover")
            expect(page.locator("#legend-list li")).to_have_count(len(legend))

            # ---- Validation Tool: the queue, first change selected
            page.get_by_role("link", name="Validation Tool").click()
            expect(page.locator("#queue-list .queue-item")).to_have_count(len(queue))
            assert page.locator("#queue-list .queue-item").evaluate_all("els => els.map(e => e.dataset.id)") == queue
            expect(page.locator("body")).to_have_attribute("data-change-id", queue[0])
            expect(page.locator("#queue-counts")).to_have_attribute("data-left", str(len(queue)))
            page.wait_for_timeout(1500)
            shot(page, "validate-first")

            def decide_with(key: str, change_id: str, next_id: str, status: int = 200) -> None:
                with page.expect_response(
                    lambda r: r.request.method == "POST" and r.url.endswith(f"/api/changes/{change_id}/decisions")
                ) as answer:
                    page.keyboard.press(key)
                assert answer.value.status == status, answer.value.text()
                expect(page.locator("body")).to_have_attribute("data-change-id", next_id)

            # confirm with the keyboard
            decide_with("c", queue[0], queue[1])
            # reject, with a comment (Esc leaves the text field so the shortcut applies)
            page.get_by_label("Comment (optional)").fill(REJECT_COMMENT)
            page.keyboard.press("Escape")
            decide_with("r", queue[1], queue[2])

            # correct: another class after, one vertex (the rightmost, on the after imagery) dragged outwards
            page.keyboard.press("e")
            expect(page.locator("#correct-fields")).to_be_visible()
            current_to = int(page.locator("#d-to").input_value())
            current_from = int(page.locator("#d-from").input_value())
            new_to = next(c for c in sorted(legend) if c not in (current_to, current_from))
            page.get_by_label("True class after").select_option(str(new_to))
            handles = page.locator("#vmap-img-after .vertex-handle")
            assert handles.count() >= 3
            boxes = handles.evaluate_all(
                "els => els.map(e => e.getBoundingClientRect()).map(b => [b.x + b.width / 2, b.y + b.height / 2])"
            )
            hx, hy = max(boxes, key=lambda b: b[0])
            page.mouse.move(hx, hy)
            page.mouse.down()
            page.mouse.move(hx + 25, hy, steps=8)
            page.mouse.up()
            expect(page.locator("#geometry-state")).to_have_text("1 vertex moved.")
            page.wait_for_timeout(500)
            shot(page, "validate-correct")
            decide_with("Control+Enter", queue[2], queue[3])
            expect(page.locator("#queue-counts")).to_have_attribute("data-done", "3")
            expect(page.locator("#queue-counts")).to_have_attribute("data-left", str(len(queue) - 3))

            # two operators on the same change: bob decides it first, alice's decision is refused (409)
            bob = ApiClient(service.url, SECOND)
            bob.call("POST", f"/api/changes/{queue[3]}/decisions", {"action": "confirm", "version": 1})
            with page.expect_response(lambda r: r.request.method == "POST" and "/decisions" in r.url) as answer:
                page.keyboard.press("c")
            assert answer.value.status == 409, answer.value.text()
            conflict = page.locator("#conflict")
            expect(conflict).to_be_visible()
            expect(conflict).to_contain_text("confirmed")
            expect(conflict).to_contain_text(SECOND)
            expect(page.locator("#d-confirm")).to_be_disabled()
            shot(page, "validate-conflict")
            page.get_by_role("button", name="Reload this change").click()
            expect(conflict).to_be_hidden()
            expect(page.locator("#change-status")).to_have_text("confirmed")
            expect(page.locator("#change-version")).to_have_text("2")

            # statistics: four decisions, by two operators
            page.locator("#stats summary").click()
            stats = page.locator("#stats-body")
            expect(stats).to_contain_text(f"4 of {len(queue)} changes decided.")
            expect(stats.locator("table").first.locator("tbody tr")).to_have_count(2)
            expect(stats).to_contain_text(OPERATOR)
            expect(stats).to_contain_text(SECOND)

            # ---- log out; a viewer reads the queue but cannot decide
            page.get_by_role("button", name="Log out").click()
            expect(page.locator("#view-login")).to_be_visible()
            page.get_by_label("User name").fill(READER)
            page.get_by_label("Password").fill(PASSWORDS[READER])
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#user-role")).to_have_text("viewer")
            page.get_by_role("link", name="Validation Tool").click()
            expect(page.locator("body")).to_have_attribute("data-change-id", queue[4])
            expect(page.locator("#d-confirm")).to_be_disabled()
            expect(page.locator("#role-note")).to_be_visible()
            posts_before = sum("/decisions" in u for u in requests)
            page.keyboard.press("c")
            page.wait_for_timeout(300)
            assert sum("/decisions" in u for u in requests) == posts_before, "a viewer's key press sent a decision"
            shot(page, "validate-viewer")
        except Exception as err:
            shot(page, "failure")
            err.add_note(f"screenshots: {shots}")
            raise

    # ---- the store holds exactly those decisions
    decisions = store_rows(
        store_db, "SELECT change_id::text, decided_by, action, comment FROM lcms.decisions ORDER BY id"
    )
    assert decisions == [
        (queue[0], OPERATOR, "confirm", None),
        (queue[1], OPERATOR, "reject", REJECT_COMMENT),
        (queue[2], OPERATOR, "correct", None),
        (queue[3], SECOND, "confirm", None),
    ]
    changes = {
        str(r[0]): r[1:]
        for r in store_rows(
            store_db,
            "SELECT id, status, version, corrected_from_class, corrected_to_class, "
            "ST_AsGeoJSON(geom), ST_AsGeoJSON(corrected_geom) FROM lcms.changes",
        )
    }
    expected_status = {queue[0]: "confirmed", queue[1]: "rejected", queue[2]: "corrected", queue[3]: "confirmed"}
    for change_id, (status, version, _cf, _ct, _g, _cg) in changes.items():
        decided = change_id in expected_status
        assert (status, version) == ((expected_status[change_id], 2) if decided else ("detected", 1)), change_id
    _s, _v, corrected_from, corrected_to, geom, corrected = changes[queue[2]]
    assert corrected_to == new_to and corrected_from in (None, current_from)
    assert corrected is not None, "the moved vertex was not saved"
    before = [tuple(p) for ring in polygon_rings(json.loads(geom)) for p in ring[:-1]]
    after = [tuple(p) for ring in polygon_rings(json.loads(corrected)) for p in ring[:-1]]
    assert len(before) == len(after)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if max(abs(b[0] - a[0]), abs(b[1] - a[1])) > 1e-7]
    assert len(moved) == 1, f"expected one moved vertex, got {moved}"
    ((old, new),) = moved
    assert new[0] > old[0] and abs(new[1] - old[1]) < 2e-5, "the vertex did not move east"

    # ---- everything the page asked for came from the service; no script error
    foreign = sorted({u for u in requests if not u.startswith((service.url, "data:", "blob:"))})
    assert foreign == [], f"requests outside the service: {foreign}"
    assert page_errors == [], page_errors
    # Expected: the 401 of /api/auth/me before each login, and the 409. Anything else (a CSP refusal, a
    # tile that failed) is a bug.
    expected = ("status of 401 (Unauthorized)", "status of 409 (Conflict)")
    assert [m for m in console_errors if not m.endswith(expected)] == []
    print("screenshots:", *saved, sep="\n  ")


def polygon_rings(geometry: dict[str, Any]) -> list[list[list[float]]]:
    """The rings of a GeoJSON Polygon or MultiPolygon, in order."""
    if geometry["type"] == "Polygon":
        return list(geometry["coordinates"])
    return [ring for polygon in geometry["coordinates"] for ring in polygon]


def test_blind_assessment_in_the_browser(service: ServiceProcess, project: Path, store_db: str) -> None:  # noqa: F811
    """Assessment: a validator labels two sample points of 2024's design with the keyboard, from imagery only.

    The design is drawn with ``lcms accuracy design`` into the season's accuracy folder (where the reporting
    stage looks). The page must never ask for the map, pixel or change tiles while labelling, the blind
    answers must hold nothing of the map, and the labels must be in the store; an admin's export then
    writes labels.csv with exactly those two references.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian's chromium package; `make setup` installs it as root)")
    from playwright.sync_api import expect

    from lcms_tasks.config import load_config
    from lcms_tasks.storage import Storage

    lcms = Path(sys.executable).with_name("lcms")
    cfg = load_config(project, check_files=False)
    storage = Storage(cfg.storage_root)
    folder = storage.local_path(storage.uri(cfg.project, "2024", "accuracy"))
    proc = subprocess.run(
        [
            *(str(lcms), "accuracy", "design", "--config", str(project), "--season", "2024", "--out", str(folder)),
            *("--no-change-strata", "--sample-size", "10", "--min-per-stratum", "1", "--seed", "5"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with (folder / "points.csv").open() as fh:
        design_points = [row["point_id"] for row in csv.DictReader(fh)]
    boss = "dora"
    added = subprocess.run(
        [str(lcms), "users", "add", boss, "--role", "admin", "--config", str(project)],
        input="dora-exports-2024\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr

    shots = shots_folder()
    requests: list[str] = []
    page_errors: list[str] = []
    console_errors: list[str] = []
    with chromium_page(requests, page_errors, console_errors) as page:
        try:
            page.goto(f"{service.url}/#assess")
            page.get_by_label("User name").fill(OPERATOR)
            page.get_by_label("Password").fill(PASSWORDS[OPERATOR])
            with page.expect_response(lambda r: r.url.endswith("/api/assessment/2024")) as design_answer:
                page.get_by_role("button", name="Log in").click()
            blind = design_answer.value.json()
            assert not {"map_class", "stratum", "change", "inclusion_probability"} & {
                k for p in blind["points"] for k in p
            }
            assert "stratum" not in design_answer.value.text() and "map_class" not in design_answer.value.text()
            expect(page.locator("#view-assess")).to_be_visible()
            expect(page.locator("#assess-list .queue-item")).to_have_count(len(design_points))
            expect(page.locator("body")).to_have_attribute("data-point-id", design_points[0])
            expect(page.locator("#assess-counts")).to_have_attribute("data-left", str(len(design_points)))
            page.wait_for_timeout(1500)  # let the imagery draw
            page.screenshot(path=str(shots / "assessment-1-first-point.png"))

            legend = {c["key"]: c for c in blind["legend"]}
            for key, point, following in (
                ("1", design_points[0], design_points[1]),
                ("2", design_points[1], design_points[2]),
            ):

                def is_label_post(r: Any, p: str = point) -> bool:
                    return bool(r.request.method == "POST" and r.url.endswith(f"/points/{p}/label"))

                with page.expect_response(is_label_post) as answer:
                    page.keyboard.press(key)
                assert answer.value.status == 200, answer.value.text()
                expect(page.locator("body")).to_have_attribute("data-point-id", following)
            expect(page.locator("#assess-counts")).to_have_attribute("data-done", "2")
            expect(page.locator("#assess-counts")).to_have_attribute("data-left", str(len(design_points) - 2))
            expect(page.locator(f"#assess-list .queue-item[data-id='{design_points[0]}']")).to_contain_text(
                legend["1"]["name"]
            )
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "assessment-2-two-labelled.png"))
        except Exception as err:
            page.screenshot(path=str(shots / "assessment-failure.png"))
            err.add_note(f"screenshots: {shots}")
            raise

    assert any("/api/imagery/2024/tiles/" in u for u in requests), "the imagery was not shown"
    shown_map = [u for u in requests if "/api/maps/" in u or "/api/pixel" in u or "/ogc/" in u or "/api/changes" in u]
    assert shown_map == [], f"the assessment asked for the map: {shown_map[:5]}"
    assert page_errors == [], page_errors
    assert [m for m in console_errors if not m.endswith("status of 401 (Unauthorized)")] == []
    labels = store_rows(
        store_db, "SELECT point_id, labelled_by, reference_class, version FROM lcms.accuracy_labels ORDER BY id"
    )
    assert labels == [
        (design_points[0], OPERATOR, legend["1"]["id"], 1),
        (design_points[1], OPERATOR, legend["2"]["id"], 1),
    ]
    PASSWORDS[boss] = "dora-exports-2024"
    exported = ApiClient(service.url, boss).call("POST", "/api/assessment/2024/export")
    assert (exported["labelled"], exported["unlabelled"], exported["labellers"]) == (
        2,
        len(design_points) - 2,
        [OPERATOR],
    )
    with (folder / "labels.csv").open() as fh:
        references = {row["point_id"]: row["reference"] for row in csv.DictReader(fh) if row["reference"]}
    assert references == {design_points[0]: legend["1"]["name"], design_points[1]: legend["2"]["name"]}


def test_parcel_checks_in_the_browser(service: ServiceProcess, project: Path, store_db: str) -> None:  # noqa: F811
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian's chromium package; `make setup` installs it as root)")
    from playwright.sync_api import expect

    lcms = Path(sys.executable).with_name("lcms")
    markers = subprocess.run(
        [
            *(str(lcms), "parcels", "markers", "--config", str(project), "--season", "2024", "--product", "crop_type"),
            *("--misdeclared-fraction", "0.3", "--disagreement-threshold", "0.2", "--min-class-count", "2"),
            *("--block-m", "320", "--min-pixels", "2", "--threads", "2"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert markers.returncode == 0, markers.stderr
    flagged = json.loads(markers.stdout)["disagreements"]
    assert flagged >= 3, f"only {flagged} disagreements: too few to check"
    published = publish_season(project, "2024")  # finalize loads the crop product's flagged parcels
    assert published
    checks = store_rows(
        store_db,
        "SELECT id::text, parcel_id, from_class, from_name, to_class, to_name FROM lcms.changes "
        "WHERE kind = 'parcel_check' AND status = 'detected' ORDER BY area_m2 * (1 - confidence) DESC, id DESC",
    )
    assert len(checks) == flagged
    ids = [c[0] for c in checks]
    config = yaml.safe_load(project.read_text())
    crops = {int(c["id"]): c["name"] for c in config["legends"]["crop_type"] if int(c["id"]) != 0}

    shots = shots_folder()
    requests: list[str] = []
    page_errors: list[str] = []
    console_errors: list[str] = []
    with chromium_page(requests, page_errors, console_errors) as page:
        try:
            page.goto(f"{service.url}/#validate")
            page.get_by_label("User name").fill(OPERATOR)
            page.get_by_label("Password").fill(PASSWORDS[OPERATOR])
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#view-validate")).to_be_visible()
            with page.expect_response(lambda r: "/api/changes?" in r.url and "kind=parcel_check" in r.url):
                page.get_by_label("Queue", exact=True).select_option("parcel_check")
            expect(page.locator("#queue-list .queue-item")).to_have_count(len(ids))
            assert page.locator("#queue-list .queue-item").evaluate_all("els => els.map(e => e.dataset.id)") == ids
            expect(page.locator("body")).to_have_attribute("data-change-id", ids[0])
            first = checks[0]
            expect(page.locator("#change-title")).to_have_text(f"Declared {first[3]} · predicted {first[5]}")
            expect(page.locator("#parcel-id")).to_have_text(first[1])
            expect(page.locator("#vcap-map-after")).to_contain_text("crop type map; predicted")
            for _ in range(120):  # the crop map's tiles (a busy machine draws late)
                if any("/CLASS/tiles/" in u and "product=crop_type" in u for u in requests):
                    break
                page.wait_for_timeout(250)
            else:
                raise AssertionError("the crop type map was not asked for")
            page.wait_for_timeout(1500)  # let the tiles draw
            page.screenshot(path=str(shots / "parcel-check-1-first.png"))

            def decide_with(key: str, check_id: str, next_id: str) -> None:
                with page.expect_response(
                    lambda r: r.request.method == "POST" and r.url.endswith(f"/api/changes/{check_id}/decisions")
                ) as answer:
                    page.keyboard.press(key)
                assert answer.value.status == 200, answer.value.text()
                expect(page.locator("body")).to_have_attribute("data-change-id", next_id)

            decide_with("c", ids[0], ids[1])  # the prediction is right
            decide_with("r", ids[1], ids[2])  # the declaration is right
            page.keyboard.press("e")  # another crop than both
            expect(page.locator("#correct-fields")).to_be_visible()
            expect(page.locator("#d-from")).to_be_disabled()
            expect(page.locator("#d-vertex-hint")).to_be_hidden()
            assert page.locator("#vmap-img-after .vertex-handle").count() == 0
            third = next(c for c in sorted(crops) if c not in (checks[2][2], checks[2][4]))
            page.get_by_label("True crop").select_option(str(third))
            page.screenshot(path=str(shots / "parcel-check-2-correct.png"))
            next_id = ids[3] if len(ids) > 3 else ids[2]
            with page.expect_response(lambda r: r.request.method == "POST" and "/decisions" in r.url) as answer:
                page.keyboard.press("Control+Enter")
            assert answer.value.status == 200, answer.value.text()
            if len(ids) > 3:
                expect(page.locator("body")).to_have_attribute("data-change-id", next_id)
            expect(page.locator("#queue-counts")).to_have_attribute("data-done", "3")
        except Exception as err:
            page.screenshot(path=str(shots / "parcel-check-failure.png"))
            err.add_note(f"screenshots: {shots}")
            raise
    assert page_errors == [], page_errors
    assert [m for m in console_errors if not m.endswith("status of 401 (Unauthorized)")] == []
    decided = {
        r[0]: r[1:]
        for r in store_rows(
            store_db,
            "SELECT id::text, status, corrected_from_class, corrected_to_class FROM lcms.changes "
            "WHERE kind = 'parcel_check' AND status <> 'detected'",
        )
    }
    assert decided == {
        ids[0]: ("confirmed", None, None),
        ids[1]: ("rejected", None, None),
        ids[2]: ("corrected", None, third),
    }
