"""LCMS benchmarks: per-stage speed and memory, side by side with eo-learn's stock tasks.

``python -m bench.run`` (``make bench`` / ``make bench-quick``) builds a synthetic project in a
temporary folder, runs every stage of the chain on one tile through
:func:`lcms_tasks.runner.run_tiles` in a fresh subprocess per stage (so the peak RSS is the
stage's own), recomputes the features and the classifier the way eo-learn's land-cover example
does (see :mod:`bench.eolearn_ref`), checks that both paths agree, and writes a JSON and a
markdown report.
"""
