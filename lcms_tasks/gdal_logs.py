"""Silence the two GDAL warnings about GeoPackages in extension-less in-memory files, and nothing else.

eo-learn stores an EOPatch's vector features (the synthetic truth parcels, LULC polygons) as
GeoPackage bytes and reads and writes them through fiona in-memory files: ``gpd.read_file`` on
a file object becomes ``/vsimem/<uuid>`` and ``to_file`` on a file object writes one. Those
names have no extension, so GDAL's GPKG driver warns, through fiona's loggers, on every read
("File /vsimem/... has GPKG application_id, but non conformant file extension") and every write
("The filename extension should be 'gpkg' instead of '' ..."). The data are intact, the names
are eo-learn's to choose, not ours, and the warnings land in every add_reference log line for
line. :func:`install` adds a filter to fiona's loggers that drops exactly those two messages
(an in-memory ``/vsimem/`` read, an empty-extension write); every other GDAL warning passes.

Our own readers (lcms_tasks.reference) open files by their real names (:func:`lcms_tasks.reference.sources.gdal_path`
turns a ``.zip`` into ``/vsizip/...``), so they cause neither warning.
"""

from __future__ import annotations

import logging
import re

#: fiona's loggers that relay GDAL's CPLE warnings (``fiona._env`` and ``fiona._err`` both do).
FIONA_LOGGERS: tuple[str, ...] = ("fiona._env", "fiona._err")

_IN_MEMORY_GPKG = (
    re.compile(r"File /vsimem/\S* has GPKG application_id, but non conformant file extension"),
    re.compile(r"The filename extension should be 'gpkg' instead of '' to conform to the GPKG specification"),
)


class InMemoryGpkgFilter(logging.Filter):
    """Drops GDAL's GPKG file-extension warnings about extension-less (in-memory) files."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        return not any(pattern.search(message) for pattern in _IN_MEMORY_GPKG)


_FILTER = InMemoryGpkgFilter()


def install() -> None:
    """Add the filter to fiona's loggers (idempotent)."""
    for name in FIONA_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
