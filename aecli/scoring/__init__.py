"""Anomaly scores and what judges them: metrics, thresholds, calibration, maps, labels, image quality."""
