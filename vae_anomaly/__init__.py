"""vae-anomaly's Python API: `from vae_anomaly import Detector`.

    detector = Detector.fit(frame, label_column="label", epochs=100)
    scored = detector.score(new_frame)          # a DataFrame, one row per input row
    detector.save("models/mine")                # serve it: vae-anomaly serve models/mine
    detector = Detector.load("models/mine")

See `training.api` for the options.
"""

from training.api import Detector

__all__ = ["Detector"]
