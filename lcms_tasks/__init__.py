"""LCMS domain library: satellites, tiles, features, models, maps and changes.

This package never imports Airflow; the same functions run from the ``lcms``
CLI, an ECS container, a Celery worker or an Airflow task.
"""

import warnings

from lcms_tasks import gdal_logs as _gdal_logs

__version__ = "0.1.0"

# eo-learn stores EOPatches through the `fs` package, whose __init__ still imports pkg_resources;
# setuptools then warns on every run that imports eo-learn. Nothing here uses pkg_resources and
# the lock pins setuptools < 81 (which still ships it), so this one warning, from that one module,
# is noise to an operator.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API", category=UserWarning, module="fs")

# eo-learn reads and writes EOPatch vector features through extension-less in-memory GeoPackages;
# GDAL warns about the names on every read and write (see gdal_logs). Installed for every process
# that uses the library: the stages, the CLI and the workers.
_gdal_logs.install()
