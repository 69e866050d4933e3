"""LCMS domain library: satellites, tiles, features, models, maps and changes.

This package never imports Airflow; the same functions run from the ``lcms``
CLI, an ECS container, a Celery worker or an Airflow task.
"""

__version__ = "0.1.0"
