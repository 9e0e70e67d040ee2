"""Presentation: figures, ROI overlays, the HTML/PDF report, calibration plots."""
