"""Parcel markers: crop type per declared parcel, from per-parcel Sentinel-2 time series.

* :mod:`.table`: reading a parcel time-series table (long or wide, Parquet / GeoParquet / CSV) into
  a (dates x parcels x bands) cube, with the band columns found by a regular expression;
* :mod:`.features`: LCMS's features of each parcel (the features stage's indices and temporal
  interpolation, plus temporal statistics) as one row per parcel;
* :mod:`.classify`: the stratified K-fold cross-validation, training and prediction with the
  training stage's classifier, and the rule for rare classes;
* :mod:`.model`: the model file (one XGBoost file carrying its own metadata);
* :mod:`.cli`: ``lcms parcels evaluate | train | predict``.
"""
