"""Cohort QC report of batch results: counts, distributions, scanners, review list,
outliers, provenance and longitudinal change (:func:`summarize`)."""

from tbscore.cohort.summary import CohortReport, summarize

__all__ = ["CohortReport", "summarize"]
