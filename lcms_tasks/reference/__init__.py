"""Reference data: reading reference polygons (files, synthetic truth) and rasterising them per tile.

:mod:`lcms_tasks.reference.sources` reads and crosswalks polygons;
:mod:`lcms_tasks.reference.rasterize` burns them on a grid, resolves overlaps and erodes borders;
:mod:`lcms_tasks.reference.crosswalk` parses crosswalks and chains them (national code -> HCAT3
-> legend class); :mod:`lcms_tasks.reference.ingest`, :mod:`~lcms_tasks.reference.quality` and
:mod:`~lcms_tasks.reference.checks` are ``lcms reference ingest/fuse``, ``quality`` and the
config-time checks of reference sources. The add_reference stage ties sources to a tile.
"""
