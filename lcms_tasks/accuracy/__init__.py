"""Accuracy and area you can defend: design-based estimators over probability samples.

A map's accuracy and its class areas are only defensible when they come from a probability sample
of reference labels and estimators that weight each unit by its inclusion probability:

* :mod:`.olofsson` — strata = map classes, from a sample confusion matrix and the mapped areas
  (Olofsson et al. 2013, 2014);
* :mod:`.stehman` — strata that differ from the map classes (change strata, buffers), from the
  sample units themselves (Stehman 2014); the Olofsson case is a special case of it;
* :mod:`.estimate` — the shared result (:class:`AccuracyEstimate`) and input error;
* :mod:`.tables` — the CSV inputs of ``lcms accuracy area``;
* :mod:`.allocation`, :mod:`.design`, :mod:`.assess` — the sample design over a season's map
  (stratum sizes, allocation for a target standard error, drawing, export) and its assessment;
* :mod:`.cli` — ``lcms accuracy ...``.

Pure numpy functions over arrays; nothing here imports Airflow.
"""

from __future__ import annotations

from lcms_tasks.accuracy.estimate import Z95, AccuracyEstimate, AccuracyInputError
from lcms_tasks.accuracy.olofsson import olofsson_estimates
from lcms_tasks.accuracy.stehman import stehman_estimates

__all__ = ["Z95", "AccuracyEstimate", "AccuracyInputError", "olofsson_estimates", "stehman_estimates"]
