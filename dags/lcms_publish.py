"""LCMS stage DAG `lcms_publish` (built by the shared factory; see plugins/lcms_airflow/factory.py)."""

from lcms_airflow.factory import build_stage_dag

dag = build_stage_dag("publish")
