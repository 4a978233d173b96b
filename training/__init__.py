"""Offline training of vae-anomaly models: data loading, the training loop, calibration, evaluation
and the `vae-anomaly` command line. Builds on `model`; never imports `service`."""
