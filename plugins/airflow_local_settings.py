"""Airflow's local-settings hook: every Airflow process imports this module when Airflow initialises
(it sits in the plugins folder, which Airflow puts on ``sys.path`` first).

LCMS uses it for one thing: in the processes that *fork* task processes, the scheduler (whose LocalExecutor
workers fork each task's supervisor and task) and ``airflow celery worker`` (whose pool does the same), it
imports the domain library's heavy dependencies once, before any fork. Every task process then inherits
them instead of importing numpy, pandas, geopandas, rasterio, eo-learn and xgboost itself, which cost
each task 1.5 to 4 s on a 2-core machine (a publish or resolve step took ~2.5 s, mostly imports). The
parent only imports modules (it never computes with them, so no OpenMP or BLAS thread pool of its own
is forked). ``LCMS_PRELOAD=0`` turns it off. Other components (API server, DAG processor, triggerer,
the CLI) import nothing more.

Nothing here imports Airflow (this runs while Airflow itself is being imported) and ``__all__`` is empty:
Airflow copies a local-settings module's public names into ``airflow.settings``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

__all__: list[str] = []

#: What a task process of LCMS imports, in dependency order (missing optional ones are skipped).
PRELOAD = (
    "numpy",
    "pandas",
    "shapely",
    "pyproj",
    "geopandas",
    "rasterio",
    "scipy.ndimage",
    "eolearn.core",
    "xgboost",
    "lcms_tasks.config",
    "lcms_tasks.runner",
    "lcms_tasks.tolerance",
    "lcms_tasks.eopatch",
)


def forks_task_processes(argv: list[str]) -> bool:
    """True for the Airflow commands whose processes fork task processes."""
    args = [a for a in argv[1:] if not a.startswith("-")]
    return args[:1] == ["scheduler"] or args[:2] == ["celery", "worker"]


def preload(argv: list[str] | None = None) -> list[str]:
    """Import :data:`PRELOAD` when this process forks task processes; the modules imported."""
    if os.environ.get("LCMS_PRELOAD", "1").strip() in ("0", "false", "no"):
        return []
    if not forks_task_processes(sys.argv if argv is None else argv):
        return []
    done = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as err:  # an optional dependency: its tasks import it (and fail) themselves
            logging.getLogger(__name__).warning("LCMS preload: %s not imported: %s", name, err)
            continue
        done.append(name)
    return done


preload()
