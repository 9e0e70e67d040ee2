"""Pure computation on arrays: settings, ROIs, lags, variogram, slope, results, detection,
calibration model. Imports nothing above it (no file or DICOM access)."""
