"""Airflow glue for LCMS: the DAG factory, the tile runners and run resolution.

DAG files in ``dags/`` are one line each: ``dag = build_stage_dag("<stage>")``.
Nothing here imports the heavy scientific stack at module level, so parsing a
DAG file stays cheap; stage code is imported inside tasks.
"""
