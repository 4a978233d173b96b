"""What every loaded model shares, whatever its kind: artifact I/O, the scoring noise, thresholds,
p-values. `BaseDetector.load` reads an artifact and returns the detector class of its `kind`
(`model.detector.Detector` for tabular, `model.image_detector.ImageDetector` for images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from model.artifact import Manifest, ModelKind, load_artifact, save_artifact
from model.errors import ArtifactError
from model.scoring import ScoreTerms, posterior_noise
from model.thresholds import ThresholdSet, p_values, sort_calibration


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without CUDA is an error, not a silent CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArtifactError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


@dataclass
class ScoreBatch:
    """Scores of B inputs plus what is needed to explain them."""

    terms: ScoreTerms
    p_value: np.ndarray  # (B,)
    exceeded: np.ndarray  # (B, T) bool, T = thresholds.names
    missing: np.ndarray  # (B, F) bool; all False for images
    inputs: Any  # the checked inputs: tabular columns, or image pixels
    thresholds: ThresholdSet

    def __len__(self) -> int:
        return self.terms.score.shape[0]


class BaseDetector:
    """A trained VAE with its scoring configuration and thresholds; subclasses own the inputs."""

    kind: ClassVar[ModelKind]

    def __init__(self, manifest: Manifest, vae: nn.Module, device: torch.device):
        self.manifest = manifest
        self.vae = vae.to(device).eval()
        self.device = device
        scoring = manifest.scoring
        self.noise = posterior_noise(scoring.n_samples, manifest.network.latent_dim, scoring.seed).to(device)
        self.thresholds = ThresholdSet(
            sort_calibration(manifest.calibration_scores), dict(manifest.thresholds), manifest.active_threshold
        )

    @staticmethod
    def build_network(manifest: Manifest) -> nn.Module:
        raise NotImplementedError

    def save(self, directory: Path) -> Manifest:
        """Write this detector as an artifact directory; its manifest gains the real model id."""
        fields = self.manifest.model_dump(by_alias=True, exclude={"model_id", "weights_sha256", "library_versions"})
        fields["thresholds"] = self.thresholds.thresholds
        fields["active_threshold"] = self.thresholds.active
        self.manifest = save_artifact(directory, fields, self.vae.state_dict())
        return self.manifest

    @classmethod
    def load(cls, directory: Path, device: str = "auto") -> Any:
        """Load an artifact directory as the detector of its kind; raises `ArtifactError` on anything
        missing or altered, or when called on a subclass of another kind."""
        manifest, tensors = load_artifact(directory)
        detector_class = detector_class_for(manifest.kind)
        if not issubclass(detector_class, cls):
            raise ArtifactError(f"{directory}: a {manifest.kind} model, not a {cls.kind} one")
        vae = detector_class.build_network(manifest)
        try:
            vae.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(
                f"{Path(directory) / 'weights.safetensors'}: weights do not fit the manifest's network: {exc}"
            ) from exc
        return detector_class(manifest, vae, resolve_device(device))

    # -- scoring --------------------------------------------------------------------------------

    def terms(self, inputs: Any) -> ScoreTerms:
        raise NotImplementedError

    def missing(self, inputs: Any) -> np.ndarray:
        raise NotImplementedError

    def score(self, inputs: Any) -> ScoreBatch:
        """Scores, p-values and threshold decisions for checked inputs."""
        thresholds = self.thresholds  # one snapshot for the whole batch
        terms = self.terms(inputs)
        return ScoreBatch(
            terms=terms,
            p_value=p_values(thresholds.calibration, terms.score),
            exceeded=thresholds.exceeded(terms.score),
            missing=self.missing(inputs),
            inputs=inputs,
            thresholds=thresholds,
        )

    def results(self, scored: ScoreBatch, explain: int) -> list[dict[str, object]]:
        """The `/score` result objects, in input order, with the `explain` largest contributors."""
        raise NotImplementedError

    def reconstruct(self, inputs: Any) -> list[dict[str, object]]:
        """`/reconstruct` result objects: the inputs as the model sees them, at the posterior mean."""
        raise NotImplementedError

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> list[Any]:
        """n draws from the generative model, as JSON-ready values."""
        raise NotImplementedError

    def warm_up(self) -> np.ndarray:
        """Score a few inputs drawn from the model itself, so the first real request does not pay
        for lazy initialisation; returns their scores (a usable model gives finite ones)."""
        raise NotImplementedError

    def encode(self, inputs: Any) -> np.ndarray:
        """Posterior means (B, L): the latent coordinates of each input."""
        return self.terms(inputs).latent_mean

    def result_fields(self, scored: ScoreBatch, i: int) -> dict[str, object]:
        """The fields of a `/score` result that every kind shares."""
        names = scored.thresholds.names
        terms = scored.terms
        active = names.index(scored.thresholds.active)
        return {
            "score": float(terms.score[i]),
            "elbo": float(terms.elbo[i]),
            "reconstruction_error": float(terms.reconstruction_error[i]),
            "p_value": float(scored.p_value[i]),
            "is_anomaly": bool(scored.exceeded[i, active]),
            "thresholds_exceeded": [t for k, t in enumerate(names) if scored.exceeded[i, k]],
        }


def detector_class_for(kind: ModelKind) -> type[BaseDetector]:
    """Imported here, not at the top: each kind's module imports this one."""
    if kind == "image":
        from model.image_detector import ImageDetector

        return ImageDetector
    from model.detector import Detector

    return Detector


def load_detector(directory: Path, device: str = "auto") -> BaseDetector:
    """The detector of whatever kind the artifact in `directory` holds."""
    detector: BaseDetector = BaseDetector.load(directory, device)
    return detector
