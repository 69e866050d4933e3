"""Connection settings for Airflow's SQLite metadata database on one machine.

The API server, scheduler, DAG processor and task processes all write to one SQLite file. Python's
sqlite3 gives up on a locked database after 5 s, so a busy scheduler (many DAG runs being created at
once) makes the API server answer "Database error" (HTTP 500) to a trigger. Waiting up to a minute
for the lock turns that into a short delay. `LocalAirflow` points
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS`` here only when the metadata database is SQLite;
PostgreSQL deployments are unaffected.
"""

CONNECT_ARGS = {"timeout": 60}
