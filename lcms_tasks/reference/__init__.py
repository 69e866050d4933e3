"""Reference data: reading reference polygons (files, synthetic truth) and rasterising them per tile.

:mod:`lcms_tasks.reference.sources` reads and crosswalks polygons;
:mod:`lcms_tasks.reference.rasterize` burns them on a grid, resolves overlaps and erodes borders.
The add_reference stage ties both to a tile.
"""
