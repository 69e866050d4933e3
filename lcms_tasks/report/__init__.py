"""Reporting helpers: pure statistics (:mod:`.stats`), truth evaluation (:mod:`.evaluate`), the area-adjusted
accuracy and where its labels come from (:mod:`.accuracy`) and HTML/plot rendering (:mod:`.html`) used by the
reporting stage."""
