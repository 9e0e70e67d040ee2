"""The reading station (CPT 77092): ``tbscore review``.

A local web application (Flask, :mod:`tbscore.review.app`) over
:class:`tbscore.review.station.Station` (studies, ROI edits, re-scoring, clinical
inputs, priors, signing), :mod:`tbscore.review.audit` (append-only sqlite audit trail)
and :mod:`tbscore.review.users` (accounts with hashed passwords). Flask is imported
only by :func:`tbscore.review.app.create_app`. See docs/reading.md.
"""
