"""The maths and the artifact of vae-anomaly: schema, preprocessing, networks, likelihoods, scoring,
thresholds and save/load. Imports neither `training` nor `service`."""

__version__ = "0.1.0"
