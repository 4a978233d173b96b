"""vae-anomaly: the one installed package. `from vae_anomaly import Detector` is the Python API.

    detector = Detector.fit(frame, label_column="label", epochs=100)
    scored = detector.score(new_frame)          # a DataFrame, one row per input row
    detector.save("models/mine")                # serve it: vae-anomaly serve models/mine
    detector = Detector.load("models/mine")

See `vae_anomaly.training.api` for the options.

The code lives in the repository's top-level folders `model/`, `service/` and `training/`; here
they are the subpackages `vae_anomaly.model`, `vae_anomaly.service` and `vae_anomaly.training`
(symbolic links in the source tree, real directories in the built wheel), so that installing the
project puts only `vae_anomaly` on a user's `sys.path`, never a generic `model` package.

`Detector` is imported on first use (PEP 562), not here: every `import vae_anomaly.service...`
runs this file first, and the service must start without the training stack (pandas,
scikit-learn, matplotlib: the container's `serve` install leaves them out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vae_anomaly.training.api import Detector

__all__ = ["Detector"]


def __getattr__(name: str) -> Any:
    """`vae_anomaly.Detector`, imported from `vae_anomaly.training.api` when first asked for."""
    if name == "Detector":
        from vae_anomaly.training.api import Detector

        return Detector
    raise AttributeError(f"module 'vae_anomaly' has no attribute {name!r}")
