"""The Airflow UI is the front door: on a fresh metadata database every LCMS DAG can be triggered as is.

One real Airflow (``LocalAirflow``: API server, scheduler, DAG processor) on a
fresh home and SQLite database for the module, ``LCMS_CONFIG`` pointing at a
2 x 2-tile project. Airflow's own default ``dags_are_paused_at_creation=True``
is kept, so the DAGs being unpaused is the factory's doing.

* Headless Chromium (Debian's, driven by Playwright) logs in through the simple
  auth manager's login page, opens ``lcms_download``'s trigger form, presses
  Trigger without typing anything, and the run starts.
* Every DAG is triggered through the REST API with an empty conf and with the
  form's defaults (read from the DAG details, as the UI does); each must be
  accepted. Those runs may fail later for lack of upstream data: only
  acceptance is checked here.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lcms_airflow.local_stack import LocalAirflow
from lcms_tasks.stages import STAGES
from tests.chain_helpers import CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import base_config, write_aoi

pytestmark = pytest.mark.slow

DAG_IDS = [f"lcms_{s.name}" for s in STAGES]
STARTED = {"queued", "running", "success"}


@pytest.fixture(scope="module")
def project_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("project")
    write_aoi(folder / "aoi.geojson")
    cfg = base_config("aoi.geojson", str(folder / "data"))
    (folder / "project.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder / "project.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, project_config: Path) -> Iterator[LocalAirflow]:
    af = LocalAirflow(
        home=tmp_path_factory.mktemp("airflow-home"),
        extra_env={
            "LCMS_CONFIG": str(project_config),
            # Airflow's default: DAGs must unpause themselves (is_paused_upon_creation=False).
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # Runs without upstream data fail; let them fail at once instead of retrying.
            "LCMS_TASK_RETRIES": "0",
            # The runs these tests trigger start (the scheduler moves them to running) but run no task: with
            # tasks, the form-default download runs would download and their assets start the chain in the
            # background, whose task processes then write to the one SQLite file while the next test
            # triggers (seen: a trigger or a run update waiting more than 60 s for the database lock). How
            # runs end is the chain tests' business.
            "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "0",
        },
    )
    try:
        af.start()
        af.wait_for_dags(DAG_IDS)
        yield af
    finally:
        af.stop(timeout=10)  # the scheduler would finish every queued task of the runs triggered here first


def post(af: LocalAirflow, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST to the REST API; (HTTP status, decoded answer) whatever the status."""
    req = urllib.request.Request(
        f"{af.url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {af.token()}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def form_defaults(af: LocalAirflow, dag_id: str) -> dict[str, Any]:
    """What the trigger form holds before anything is typed: each param's value from the DAG details."""
    params = af.api("GET", f"/api/v2/dags/{dag_id}/details")["params"]
    return {name: field["value"] for name, field in params.items()}


def get_run(af: LocalAirflow, dag_id: str, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
    return run


# Runs first, on the fresh database (pytest keeps the file's order).
def test_fresh_database_has_every_dag_unpaused(stack: LocalAirflow) -> None:
    dags = {d["dag_id"]: d for d in stack.api("GET", "/api/v2/dags?limit=1000&tags=lcms")["dags"]}
    assert set(dags) == set(DAG_IDS)
    assert {dag_id: d["is_paused"] for dag_id, d in dags.items()} == dict.fromkeys(DAG_IDS, False)
    for dag_id in DAG_IDS:
        assert stack.api("GET", f"/api/v2/dags/{dag_id}/details")["is_paused"] is False, dag_id
        assert stack.runs(dag_id) == [], f"{dag_id} has runs on a fresh database"


def test_trigger_form_in_the_browser(stack: LocalAirflow, project_config: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian's chromium package; `make setup` installs it as root)")
    from playwright.sync_api import expect, sync_playwright

    defaults = form_defaults(stack, "lcms_download")
    assert defaults["config"] == str(project_config)
    screenshot = tmp_path / "trigger-form.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{stack.url}/dags/lcms_download")
            page.wait_for_url("**/auth/login**")  # the simple auth manager's login page
            page.get_by_label("Username").fill(stack.user)
            page.get_by_label("Password").fill(stack.password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/dags/lcms_download")

            page.get_by_role("button", name="Trigger Dag").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Run Parameters").wait_for()
            # The form holds the defaults the DAG documents: the project config from LCMS_CONFIG.
            config_field = dialog.get_by_role("group").filter(has_text="Project config").get_by_role("textbox")
            expect(config_field).to_have_value(str(project_config))
            trigger = dialog.get_by_role("button", name="Trigger", exact=True)
            assert trigger.is_enabled(), "the untouched trigger form cannot be submitted"
            with page.expect_response(
                lambda r: r.request.method == "POST" and r.url.endswith("/api/v2/dags/lcms_download/dagRuns")
            ) as answer:
                trigger.click()
            assert answer.value.status == 200, answer.value.text()
            run = answer.value.json()
            # The UI goes on to the new run's page.
            run_page = f"/dags/lcms_download/runs/{run['dag_run_id']}"
            page.wait_for_url(lambda url: run_page in urllib.parse.unquote(url))
        except Exception as err:
            page.screenshot(path=str(screenshot), full_page=True)
            err.add_note(f"screenshot of the page: {screenshot}")
            raise
        finally:
            browser.close()

    assert run["conf"] == defaults, "the form did not post its defaults"
    assert run["triggered_by"] == "ui" and run["triggering_user_name"] == stack.user
    runs = stack.runs("lcms_download")
    assert [r["run_id"] for r in runs] == [run["dag_run_id"]]
    # The run starts: queued, then the scheduler sets its start date as it moves it to running. How
    # it ends is the chain tests' business (test_airflow_chain.py), not the form's.
    assert runs[0]["state"] in STARTED
    deadline = time.monotonic() + 120
    while (now := get_run(stack, "lcms_download", run["dag_run_id"]))["start_date"] is None:
        assert time.monotonic() < deadline, f"the run never started: {now}"
        time.sleep(1)
    assert now["state"] != "queued", now


@pytest.mark.parametrize("form", ["empty conf", "form defaults"])
@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_dag_accepts_a_trigger(stack: LocalAirflow, project_config: Path, dag_id: str, form: str) -> None:
    defaults = form_defaults(stack, dag_id)
    assert defaults["config"] == str(project_config)
    assert defaults["season"] is None and defaults["tiles"] is None
    if form == "empty conf":
        body: dict[str, Any] = {"logical_date": None, "conf": {}}
    else:
        # As the UI posts it: the logical date the form shows, every field as it was filled in.
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {"conf": defaults, "logical_date": now, "data_interval_start": None, "data_interval_end": None}
    before = {r["run_id"] for r in stack.runs(dag_id)}
    status, run = post(stack, f"/api/v2/dags/{dag_id}/dagRuns", body)
    assert status == 200, f"{dag_id} refused {body}: HTTP {status} {run}"
    assert run["dag_id"] == dag_id and run["run_type"] == "manual" and run["state"] in STARTED
    assert run["conf"] == body["conf"]
    assert {r["run_id"] for r in stack.runs(dag_id)} - before == {run["dag_run_id"]}
