"""In-process DAG runs: the asset event a stage publishes carries what the next stage needs."""

from __future__ import annotations

from pathlib import Path

from lcms_airflow.runs import resolve_run_specs


def test_download_publishes_run_for_features(airflow_db: Path, config_path: Path) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    from lcms_airflow.factory import build_stage_dag

    run = build_stage_dag("download").test(run_conf={"config": str(config_path), "season": "2023"})
    assert run.state == "success"
    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if e.source_run_id == run.run_id]
        extras = [dict(e.extra) for e in events]
    assert len(extras) == 1
    extra = extras[0]
    assert extra["config"] == str(config_path) and extra["season"] == "2023"
    assert extra["run_id"] == run.run_id and extra["tiles_complete"] == 4 and extra["project"] == "testproj"
    # What the features DAG derives from that event: same config, season and tiles; the download run as upstream.
    spec = resolve_run_specs({"config": "/elsewhere.yaml"}, extras, stage="features")[0]
    assert (spec["config"], spec["season"], spec["upstream_run_id"]) == (str(config_path), "2023", run.run_id)
