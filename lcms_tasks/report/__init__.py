"""Reporting helpers: pure statistics (:mod:`.stats`), truth evaluation (:mod:`.evaluate`) and
HTML/plot rendering (:mod:`.html`) used by the reporting stage."""
