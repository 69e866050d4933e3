"""The trigger form: every LCMS DAG's documented defaults must be submittable as they are.

The Airflow UI fills the "Trigger DAG" form from the DAG details the API serves
(each param's ``value`` and JSON ``schema``) and posts the values back as the
run's conf; the API server merges the conf into the serialised DAG's params and
validates them with ``jsonschema``. A default the schema refuses (``None`` for a
plain ``"type": "string"``, say) shows up in the API as ``null`` and makes the
untouched form fail. These checks run that path without a server: the SDK's
``ParamsDict``, plain ``jsonschema`` over each serialised param, and the
server-side ``SerializedParamsDict`` of the serialised DAG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lcms_tasks.stages import STAGES

REPO = Path(__file__).resolve().parents[2]
DAG_IDS = [f"lcms_{s.name}" for s in STAGES]
MAPPED = {f"lcms_{s.name}": s.mapped for s in STAGES}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="module")
def serialized(dagbag: Any) -> dict[str, Any]:
    """Each DAG as the API server sees it: serialised, then deserialised."""
    from airflow.serialization.serialized_objects import DagSerialization

    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags[dag_id])) for dag_id in DAG_IDS}


def form_fields(sdag: Any) -> dict[str, dict[str, Any]]:
    """The ``params`` of ``GET /api/v2/dags/{dag_id}/details``: name -> value, schema, description."""
    from airflow.api_fastapi.core_api.datamodels.dags import DAGDetailsResponse

    params = DAGDetailsResponse.get_params(sdag.params)
    assert params is not None
    return params


def untouched_form(sdag: Any) -> dict[str, Any]:
    """The conf the UI posts when Trigger is pressed without typing anything."""
    return {name: field["value"] for name, field in form_fields(sdag).items()}


def submit(sdag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """What ``SerializedDAG.create_dagrun`` does with a run's conf (raises ParamValidationError)."""
    resolved: dict[str, Any] = sdag.params.deep_merge(conf).validate()
    return resolved


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_sdk_params_validate_with_their_defaults(dagbag: Any, dag_id: str) -> None:
    params = dagbag.dags[dag_id].params
    resolved = params.validate()
    assert set(resolved) == set(params.keys())
    for name in params:
        assert resolved[name] == params.get_param(name).value, name


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_jsonschema_accepts_each_serialised_default(dagbag: Any, dag_id: str) -> None:
    params = dagbag.dags[dag_id].params
    for name in params:
        serialised = params.get_param(name).serialize()
        schema = serialised["schema"]
        jsonschema.validators.validator_for(schema).check_schema(schema)
        jsonschema.validate(serialised["value"], schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_form_shows_every_documented_default(dagbag: Any, serialized: dict[str, Any], dag_id: str) -> None:
    # The API serves null for a default its own schema refuses: the form would then show it empty.
    params = dagbag.dags[dag_id].params
    fields = form_fields(serialized[dag_id])
    assert set(fields) == set(params.keys())
    for name, field in fields.items():
        assert field["value"] == params.get_param(name).value, name
        assert field["description"], f"{dag_id}.{name} has no help text in the form"


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_untouched_form_and_empty_conf_are_accepted(serialized: dict[str, Any], dag_id: str) -> None:
    sdag = serialized[dag_id]
    defaults = untouched_form(sdag)
    assert submit(sdag, {}) == defaults
    assert submit(sdag, defaults) == defaults
    # What a user types into the optional fields is accepted too.
    typed = submit(sdag, {**defaults, "season": "2023", "tiles": ["32638_498_3440", "32638_499_3440"]})
    assert typed["season"] == "2023" and typed["tiles"] == ["32638_498_3440", "32638_499_3440"]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_required_fields_still_refuse_nonsense(serialized: dict[str, Any], dag_id: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    sdag = serialized[dag_id]
    with pytest.raises(ParamValidationError, match="config"):
        submit(sdag, {"config": ""})
    with pytest.raises(ParamValidationError, match="tiles"):
        submit(sdag, {"tiles": "32638_498_3440"})


def test_the_check_catches_a_non_nullable_empty_default() -> None:
    """The failure these tests guard against: ``Param(None, type="string")`` cannot be submitted as is."""
    from airflow.sdk import DAG, Param
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("lcms_bad_form", schedule=None, params={"season": Param(None, type="string")}) as dag:
        pass
    sdag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert untouched_form(sdag) == {"season": None}
    with pytest.raises(ParamValidationError, match="season"):
        submit(sdag, untouched_form(sdag))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(None, dag.params.get_param("season").serialize()["schema"])


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_skip_existing_only_on_per_tile_stages(dagbag: Any, dag_id: str) -> None:
    params = dagbag.dags[dag_id].params
    assert {"config", "season", "tiles"} <= set(params.keys())
    if MAPPED[dag_id]:
        assert "skip_existing" in params
        assert params.get_param("skip_existing").value is False
    else:
        assert "skip_existing" not in params, f"{dag_id} runs once per season: skip_existing means nothing there"


def test_per_season_stages_are_the_expected_ones() -> None:
    assert sorted(dag_id for dag_id, mapped in MAPPED.items() if not mapped) == [
        "lcms_merge_features",
        "lcms_reporting",
        "lcms_training",
    ]
