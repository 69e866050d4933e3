"""The blind assessment API over HTTP, against a fresh migrated change store and a real sample design.

The design is drawn by :class:`~lcms_tasks.accuracy.design.DesignBuilder` (what ``lcms accuracy design``
runs) over a small made-up map and written with ``write_design`` to where the reporting stage looks,
``<storage>/<project>/2024/accuracy/``. Checked: the role and CSRF checks of each endpoint; that the
blind answers hold nothing of the map (no map class, stratum, change label, inclusion probability or
confidence); labels stored one per point per labeller, a re-label an update with every version in the
append-only history; the 4xx answers naming the problem; and the export: ``lcms accuracy assess`` reads
it and counts exactly the labelled points, and the reporting stage finds and uses it.
"""

# ruff: noqa: F811 - the fixtures imported from tests.auth_helpers and tests.store_fixtures are test parameters

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lcms_service.auth import CSRF_HEADER
from lcms_service.settings import ServiceSettings
from tests.auth_helpers import (  # noqa: F401  (pytest fixtures)
    admin_client,
    auth_config,
    client_as,
    service_app,
    service_client,
    validator_client,
    viewer_client,
)
from tests.integration.test_validation_api import write_project
from tests.store_fixtures import query_rows, store_db  # noqa: F401  (pytest fixtures)

SEASON = "2024"
#: Keys and words of the map's side of a design that no blind answer may hold.
FORBIDDEN = ("map_class", "stratum", "strata", "change", "inclusion", "confidence", "class_pixels", "weight")


def clean_labels(url: str) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")  # the history's guard triggers off for this
            cur.execute("TRUNCATE lcms.accuracy_label_history, lcms.accuracy_labels")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def store_url(store_db: str) -> str:
    clean_labels(store_db)
    return store_db


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path)


def design_dir(project: Path) -> Path:
    from lcms_tasks.config import load_config
    from lcms_tasks.storage import Storage

    cfg = load_config(project, check_files=False)
    storage = Storage(cfg.storage_root)
    return storage.local_path(storage.uri(cfg.project, SEASON, "accuracy"))


@pytest.fixture
def design(project: Path) -> Path:
    """A 12-point design over a made-up 3-class map, in the season's conventional accuracy folder."""
    from lcms_tasks.accuracy.design import DesignBuilder, DesignOptions, write_design
    from lcms_tasks.config import load_config
    from lcms_tasks.grid import Tile

    cfg = load_config(project, check_files=False)
    legend = [(c.id, c.name) for c in cfg.legend()]
    classes = np.ones((8, 8), dtype=np.uint8)
    classes[:, 3:6] = 2
    classes[:, 6:] = 3
    builder = DesignBuilder(legend, DesignOptions(sample_size=12, min_per_stratum=4, seed=3))
    tile = Tile(32634, 560, 50, 8, 10.0)
    builder.add_tile(tile, classes, in_aoi=np.ones(classes.shape, dtype=bool))
    folder = design_dir(project)
    write_design(builder.finish(project=cfg.project, season=SEASON, config=str(project), source="test"), folder)
    return folder


@pytest.fixture
def service_settings(store_url: str, project: Path) -> ServiceSettings:
    return ServiceSettings(
        database_url=SecretStr(store_url),
        config=project,
        embedded_database=False,
        require_database=True,
        freeze_gc=False,
        retry_interval_s=0,
    )


def points_csv(folder: Path) -> list[dict[str, str]]:
    with (folder / "points.csv").open() as fh:
        return list(csv.DictReader(fh))


def keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


def label(client: TestClient, design_id: str, point: str, **body: Any) -> Any:
    return client.post(f"/api/assessment/{SEASON}/points/{point}/label", json={"design_id": design_id, **body})


# -- roles and CSRF ----------------------------------------------------------------------------------------


def test_roles_and_csrf(
    design: Path,
    store_url: str,
    service_client: TestClient,
    viewer_client: TestClient,
    client_as: Callable[..., TestClient],
) -> None:
    point = points_csv(design)[0]["point_id"]
    body = {"design_id": "0" * 64, "reference_class": 1}
    urls = [
        ("GET", "/api/assessment/designs", None),
        ("GET", f"/api/assessment/{SEASON}", None),
        ("POST", f"/api/assessment/{SEASON}/points/{point}/label", body),
        ("POST", f"/api/assessment/{SEASON}/export", None),
    ]
    for method, url, payload in urls:
        assert service_client.request(method, url, json=payload).status_code == 401, url
        assert viewer_client.request(method, url, json=payload).status_code == 403, url
    validator = client_as("validator")
    assert validator.get(f"/api/assessment/{SEASON}").status_code == 200
    assert validator.post(f"/api/assessment/{SEASON}/export").status_code == 403  # admins only
    design_id = validator.get(f"/api/assessment/{SEASON}").json()["design_id"]
    del validator.headers[CSRF_HEADER]
    r = label(validator, design_id, point, reference_class=1)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    admin = client_as("admin")
    del admin.headers[CSRF_HEADER]
    assert admin.post(f"/api/assessment/{SEASON}/export").status_code == 403
    assert query_rows(store_url, "SELECT 1 FROM lcms.accuracy_labels") == []


# -- blind ---------------------------------------------------------------------------------------------------


def test_the_blind_answers_hold_nothing_of_the_map(design: Path, validator_client: TestClient) -> None:
    rows = points_csv(design)
    assert {"map_class", "stratum", "change", "inclusion_probability"} <= set(rows[0])  # the design has them
    designs = validator_client.get("/api/assessment/designs")
    assert designs.status_code == 200
    assert [d["season"] for d in designs.json()] == [SEASON]
    assert designs.json()[0]["points"] == len(rows)
    answer = validator_client.get(f"/api/assessment/{SEASON}")
    assert answer.status_code == 200
    data = answer.json()
    assert [p["point_id"] for p in data["points"]] == [r["point_id"] for r in rows]  # the design's own order
    assert {k for p in data["points"] for k in p} == {"point_id", "lon", "lat", "pixel", "label"}
    first = data["points"][0]
    assert (first["lon"], first["lat"]) == (float(rows[0]["lon"]), float(rows[0]["lat"]))
    ring = first["pixel"]
    assert len(ring) == 5 and ring[0] == ring[-1]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    assert min(lons) < first["lon"] < max(lons) and min(lats) < first["lat"] < max(lats)
    assert data["progress"] == {"done": 0, "left": len(rows), "total": len(rows)}
    assert [c["key"] for c in data["legend"]][:3] == ["1", "2", "3"]
    labelled = label(validator_client, data["design_id"], rows[0]["point_id"], reference_class=2)
    assert labelled.status_code == 200, labelled.text
    again = validator_client.get(f"/api/assessment/{SEASON}")
    for response in (designs, answer, labelled, again):
        text = response.text.lower()
        assert not keys_of(response.json()) & set(FORBIDDEN), response.url
        for word in FORBIDDEN:
            assert word not in text, f"{response.url} says {word!r}"


# -- labels --------------------------------------------------------------------------------------------------


def test_labels_stored_relabel_kept_in_the_history(
    design: Path, store_url: str, client_as: Callable[..., TestClient]
) -> None:
    ana, ben = client_as("validator", name="ana"), client_as("admin", name="ben")
    data = ana.get(f"/api/assessment/{SEASON}").json()
    design_id, points = data["design_id"], [p["point_id"] for p in data["points"]]

    first = label(ana, design_id, points[0], reference_class=1)
    assert first.status_code == 200, first.text
    assert first.json()["label"]["version"] == 1 and first.json()["label"]["reference_name"] == "cropland"
    assert first.json()["progress"] == {"done": 1, "left": len(points) - 1, "total": len(points)}
    again = label(ana, design_id, points[0], reference_class=2, comment="hedgerow, mostly trees")
    assert again.status_code == 200 and again.json()["label"]["version"] == 2
    assert again.json()["progress"]["done"] == 1  # the same point: still one done
    assert label(ben, design_id, points[0], reference_class=3).status_code == 200  # another labeller, own row

    # problems: named, nothing written
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"reference_class": 99}, 422, "not a class"),
        ({"cannot_tell": True}, 422, "comment"),
        ({"cannot_tell": True, "comment": "   "}, 422, "comment"),
        ({"cannot_tell": True, "reference_class": 1, "comment": "x"}, 422, "not both"),
        ({}, 422, "reference_class"),
    ]
    for body, status, words in cases:
        r = label(ana, design_id, points[1], **body)
        assert r.status_code == status and words in r.text, (body, r.text)
    assert label(ana, design_id, "P99999", reference_class=1).status_code == 404
    stale = label(ana, "f" * 64, points[1], reference_class=1)
    assert stale.status_code == 409 and stale.json()["design_id"] == design_id
    r = ana.get("/api/assessment/2099")
    assert r.status_code == 404 and "unknown season" in r.text
    assert ana.get("/api/assessment/2023").status_code == 404  # a season without a design
    cannot = label(ana, design_id, points[1], cannot_tell=True, comment="cloud shadow on every date")
    assert cannot.status_code == 200 and cannot.json()["label"]["reference_class"] is None

    current = query_rows(
        store_url,
        "SELECT point_id, labelled_by, reference_class, reference_name, cannot_tell, comment, version, design_id "
        "FROM lcms.accuracy_labels ORDER BY id",
    )
    assert current == [
        (points[0], "ana", 2, "forest", False, "hedgerow, mostly trees", 2, design_id),
        (points[0], "ben", 3, "grassland", False, None, 1, design_id),
        (points[1], "ana", None, None, True, "cloud shadow on every date", 1, design_id),
    ]
    history = query_rows(
        store_url,
        "SELECT l.point_id, h.labelled_by, h.version, h.reference_class, h.cannot_tell "
        "FROM lcms.accuracy_label_history h JOIN lcms.accuracy_labels l ON l.id = h.label_id ORDER BY h.id",
    )
    assert history == [
        (points[0], "ana", 1, 1, False),
        (points[0], "ana", 2, 2, False),
        (points[0], "ben", 1, 3, False),
        (points[1], "ana", 1, None, True),
    ]
    conn = psycopg2.connect(store_url)
    try:
        with pytest.raises(psycopg2.Error, match="append-only"), conn.cursor() as cur:
            cur.execute("UPDATE lcms.accuracy_label_history SET reference_class = 4")
    finally:
        conn.close()
    mine = {p["point_id"]: p["label"] for p in ana.get(f"/api/assessment/{SEASON}").json()["points"]}
    assert mine[points[0]]["reference_class"] == 2 and mine[points[1]]["cannot_tell"] and mine[points[2]] is None


# -- export ----------------------------------------------------------------------------------------------------


@pytest.fixture
def labelled(design: Path, client_as: Callable[..., TestClient]) -> Iterator[tuple[TestClient, list[str]]]:
    """Every point labelled by ana but the last two; the first also by ben (another class); one cannot-tell."""
    ana, ben = client_as("validator", name="ana"), client_as("validator", name="ben")
    data = ana.get(f"/api/assessment/{SEASON}").json()
    design_id, points = data["design_id"], [p["point_id"] for p in data["points"]]
    for k, point in enumerate(points[:-2]):
        assert label(ana, design_id, point, reference_class=1 + k % 3).status_code == 200
    assert label(ben, design_id, points[0], reference_class=4).status_code == 200  # the latest: exported
    assert label(ana, design_id, points[-2], cannot_tell=True, comment="no clear date").status_code == 200
    yield client_as("admin", name="boss"), points


def test_export_is_what_assess_and_the_report_read(
    design: Path, project: Path, labelled: tuple[TestClient, list[str]]
) -> None:
    admin, points = labelled
    r = admin.post(f"/api/assessment/{SEASON}/export")
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["uri"].endswith(f"/{SEASON}/accuracy/labels.csv")
    assert (summary["points"], summary["labelled"], summary["cannot_tell"], summary["unlabelled"]) == (
        len(points),
        len(points) - 2,
        1,
        1,
    )
    assert summary["disagreements"] == 1 and summary["labellers"] == ["ana", "ben"]
    labels_file = design / "labels.csv"
    assert not [p for p in design.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    rows = list(csv.DictReader(labels_file.read_text().splitlines()))
    assert [r["point_id"] for r in rows] == points
    assert rows[0]["reference"] == "water" and rows[0]["labelled_by"] == "ben" and rows[0]["labellers"] == "2"
    assert rows[-2]["reference"] == "" and rows[-2]["cannot_tell"] == "true"
    assert rows[-1]["reference"] == "" and rows[-1]["labellers"] == "0"

    lcms = Path(sys.executable).with_name("lcms")
    proc = subprocess.run(
        [str(lcms), "accuracy", "assess", "--design", str(design), "--labels", str(labels_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["n_points"], result["n_labelled"], result["n_unlabelled"]) == (len(points), len(points) - 2, 2)

    # the reporting stage finds the labels in the season's accuracy folder and uses them
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.report.accuracy import AccuracyOptions, assess_found_design, find_design

    cfg = load_config(project, check_files=False)
    ctx = RunContext.create(cfg, season=SEASON, run_id="t", config_path=str(project))
    found, _ = find_design(ctx, AccuracyOptions())
    assert found is not None
    block = assess_found_design(ctx, found)
    assert block.get("available", True) is not False, block
    assert block["n_labelled"] == len(points) - 2


def test_export_again_after_relabel_replaces_the_file(
    design: Path, labelled: tuple[TestClient, list[str]], client_as: Callable[..., TestClient]
) -> None:
    admin, points = labelled
    assert admin.post(f"/api/assessment/{SEASON}/export").json()["labelled"] == len(points) - 2
    design_id = admin.get(f"/api/assessment/{SEASON}").json()["design_id"]
    assert label(admin, design_id, points[-1], reference_class=2).status_code == 200
    assert admin.post(f"/api/assessment/{SEASON}/export").json()["labelled"] == len(points) - 1
    rows = list(csv.DictReader((design / "labels.csv").read_text().splitlines()))
    assert rows[-1]["reference"] == "forest" and rows[-1]["labelled_by"] == "boss"
