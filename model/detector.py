"""`Detector`: a loaded model ready to score, reconstruct, sample and encode, whatever its data
kind and family.

It ties the artifact's parts together: the kind adapter (`model.kinds`: inputs, explanations,
rendering), the family's network (`model.families`: latent code, scores), the scoring
configuration and the thresholds. The CLI, the service and the benchmarks hold one of these.
Scoring large inputs runs in fixed-size chunks so memory stays bounded whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_anomaly.model.artifact import (
    Manifest,
    check_weights_file,
    load_weights,
    read_manifest,
    save_artifact,
    weight_shapes,
)
from vae_anomaly.model.errors import ArtifactError, InputError, InputIssue, UnsupportedError
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.families.base import Family, FamilyNetwork
from vae_anomaly.model.kinds import KINDS
from vae_anomaly.model.kinds.base import DataKind
from vae_anomaly.model.latent import LatentCode, encode_in_chunks, interpolate_codes, interpolation_weights
from vae_anomaly.model.scoring import ScoreBatch, ScoreTerms, posterior_noise, score_in_chunks
from vae_anomaly.model.thresholds import ThresholdSet, p_values, sort_calibration

__all__ = ["Detector", "Interpolation", "ScoreBatch", "load_detector", "resolve_device"]


@dataclass
class Interpolation:
    """`Detector.interpolate`: weights t (steps,), codes (steps, L), and the decoded points."""

    t: np.ndarray
    codes: np.ndarray
    points: list[Any]


def interpolation_count_message(count: int, unit: str) -> str:
    """The error for a body that does not hold exactly two inputs."""
    return f"interpolation needs exactly 2 inputs (the two ends), got {count} {unit}{'' if count == 1 else 's'}"


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without CUDA is an error, not a silent CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArtifactError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def build_network(manifest: Manifest) -> tuple[DataKind, FamilyNetwork]:
    """The kind adapter and an untrained network of the manifest's kind and family."""
    kind = KINDS[manifest.kind](manifest.kind_config)
    return kind, FAMILIES[manifest.family].build(kind, manifest.family_config)


def check_shapes(directory: Path, manifest: Manifest) -> None:
    """Compare the tensor shapes in the safetensors header with those of the manifest's network,
    built on the meta device (no memory): a manifest asking for huge layers is refused before
    anything is allocated. Raises `ArtifactError` naming the first difference."""
    weights = Path(directory) / "weights.safetensors"
    try:
        with torch.device("meta"):
            _, network = build_network(manifest)
    except Exception as exc:  # whatever torch raises for an impossible size (a negative width, ...)
        raise ArtifactError(f"{Path(directory) / 'manifest.json'}: its network cannot be built: {exc}") from exc
    expected = {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()}
    stored = weight_shapes(directory)
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise ArtifactError(
            f"{weights}: weights do not fit the manifest's network: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, shape in expected.items():
        if stored[name] != shape:
            raise ArtifactError(
                f"{weights}: weights do not fit the manifest's network: {name!r} is {list(stored[name])} "
                f"in the file, {list(shape)} in the manifest's network"
            )


class Detector:
    """A trained model with its kind, family network, scoring configuration and thresholds."""

    def __init__(self, manifest: Manifest, kind: DataKind, network: FamilyNetwork, device: torch.device):
        self.manifest = manifest
        self.kind = kind
        self.family: Family = FAMILIES[manifest.family]
        self.network = network.to(device).eval()
        self.device = device
        scoring = manifest.scoring
        self.noise = posterior_noise(scoring.n_samples, network.latent_dim, scoring.seed).to(device)
        self.mean_noise = torch.zeros((1, 1, network.latent_dim), device=device)  # z = mu
        self.thresholds = ThresholdSet(
            sort_calibration(manifest.calibration_scores), dict(manifest.thresholds), manifest.active_threshold
        )

    def save(self, directory: Path) -> Manifest:
        """Write this detector as an artifact directory; its manifest gains the real model id."""
        fields = self.manifest.model_dump(exclude={"model_id", "weights_sha256", "library_versions", "manifest_sha256"})
        fields["kind_config"] = self.manifest.kind_config
        fields["family_config"] = self.manifest.family_config
        fields["thresholds"] = self.thresholds.thresholds
        fields["active_threshold"] = self.thresholds.active
        self.manifest = save_artifact(directory, fields, self.network.state_dict())
        return self.manifest

    @classmethod
    def load(cls, directory: Path, device: str = "auto") -> Detector:
        """Load an artifact directory; raises `ArtifactError` on anything missing or altered.

        Order matters: the manifest (strict, checksummed), the weights' checksum, then the shapes in
        the weights' header against a network that takes no memory; only then tensors and network."""
        manifest = read_manifest(directory)
        check_weights_file(directory, manifest)
        check_shapes(directory, manifest)
        tensors = load_weights(directory)
        kind, network = build_network(manifest)
        try:
            network.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(
                f"{Path(directory) / 'weights.safetensors'}: weights do not fit the manifest's network: {exc}"
            ) from exc
        return cls(manifest, kind, network, resolve_device(device))

    # -- scoring --------------------------------------------------------------------------------

    def terms(
        self, inputs: Any, noise: torch.Tensor | None = None, progress: Callable[[int], None] | None = None
    ) -> ScoreTerms:
        """Score checked inputs in chunks of `scoring.chunk_size` (`progress`: see `score_in_chunks`)."""
        noise = self.noise if noise is None else noise
        return score_in_chunks(self.network, self.kind.batch(inputs), noise, self.manifest.scoring, progress)

    def score(self, inputs: Any, progress: Callable[[int], None] | None = None) -> ScoreBatch:
        """Scores, p-values and threshold decisions for checked inputs; `progress(n)` after each
        chunk of n inputs (a progress bar's `update`)."""
        thresholds = self.thresholds  # one snapshot for the whole batch
        terms = self.terms(inputs, progress=progress)
        return ScoreBatch(
            terms=terms,
            p_value=p_values(thresholds.calibration, terms.score),
            exceeded=thresholds.exceeded(terms.score),
            missing=self.kind.missing(inputs),
            inputs=inputs,
            thresholds=thresholds,
            rescore=self.rescore,
        )

    def rescore(self, batch: Any) -> ScoreTerms:
        """Score an already-built batch of the kind at the posterior mean (one decode per input,
        deterministic): explanations rescore inputs with elements hidden through this."""
        return score_in_chunks(self.network, batch, self.mean_noise, self.manifest.scoring)

    def results(self, scored: ScoreBatch, explain: int) -> list[dict[str, object]]:
        """The `/score` result objects, in input order, with the `explain` largest contributors."""
        return self.kind.results(scored, explain)

    def score_results(self, inputs: Any, explain: int = 3) -> list[dict[str, object]]:
        """`results(score(inputs))`: the `/score` result objects, in input order."""
        return self.results(self.score(inputs), explain)

    def reconstruct(self, inputs: Any) -> list[dict[str, object]]:
        """`/reconstruct` result objects: the inputs as the model sees them, at the code.

        Both the reconstruction and the per-element errors come from the decoder at the posterior
        mean, which no noise draw affects, so one draw instead of `scoring.n_samples` spares the
        sampled bound this method does not report.
        """
        return self.kind.reconstruct(inputs, self.terms(inputs, self.noise[:1]))

    # -- the latent space ------------------------------------------------------------------------

    def encode(self, inputs: Any) -> LatentCode:
        """The code of each checked input: posterior mean (B, L), and std (B, L) where the family
        has a posterior (see `model.latent`); in chunks of `scoring.chunk_size`, no noise drawn."""
        return encode_in_chunks(self.network, self.kind.batch(inputs), self.manifest.scoring.chunk_size, self.device)

    def encode_results(self, inputs: Any) -> list[dict[str, object]]:
        """`/encode` result objects, in input order: `mean`, `std` (families with a posterior only)
        and the kind's identifying fields (a sequence window's `row`, `timestamp`)."""
        code = self.encode(inputs)
        keys = self.kind.input_keys(inputs)
        means = code.mean.tolist()
        if code.std is None:
            return [{**keys[i], "mean": means[i]} for i in range(len(means))]
        stds = code.std.tolist()
        return [{**keys[i], "mean": means[i], "std": stds[i]} for i in range(len(means))]

    def interpolate(self, inputs: Any, steps: int) -> Interpolation:
        """Decode `steps` codes on the line between the codes of exactly two checked inputs, ends
        included (`model.latent.interpolate_codes`); each point is the kind's most likely input at
        its code (records, PNGs, windows). A conditional model's path also runs between the two
        inputs' conditions (their one-hot encodings mixed with the same weights); its records carry
        the condition of the nearer end (the first's at t = 0.5), as `/sample`'s carry theirs.
        Raises `InputError` for another count of inputs."""
        count = self.kind.count(inputs)
        if count != 2:
            raise InputError([InputIssue((), interpolation_count_message(count, self.kind.result_unit), "input_count")])
        code = self.encode(inputs)
        t = interpolation_weights(steps)
        z = interpolate_codes(code.mean[0], code.mean[1], steps)
        condition, given = None, None
        spec = self.kind.condition_spec()
        if spec is not None:  # a conditional model: the path runs between the two contexts too
            ends = self.kind.batch(inputs).condition.double().numpy()  # (2, C) one-hot
            condition = torch.from_numpy(interpolate_codes(ends[0], ends[1], steps)).float()
            positions = spec.index_of(ends)  # (2, V)
            given = np.where((t <= 0.5)[:, None], positions[0], positions[1])  # each point: its nearer end's
        decoded = self.decode_codes(torch.from_numpy(z).float(), condition)
        return Interpolation(t=t, codes=z, points=self.kind.render_expected(decoded, given))

    # -- the generative side ----------------------------------------------------------------------

    @torch.inference_mode()
    def decode_prior(
        self, n: int, generator: torch.Generator, temperature: float = 1.0, condition: np.ndarray | None = None
    ) -> Any:
        """Decode n codes z ~ N(0, temperature² I), in chunks of `scoring.chunk_size` (bounded
        decoder memory, as when scoring); the kind's decoder output on the CPU. A conditional model
        decodes given `condition`, the (n, V) value positions of its `condition_spec`."""
        z = torch.randn(n, self.network.latent_dim, generator=generator) * temperature
        spec = self.kind.condition_spec()
        return self.decode_codes(z, spec.one_hot(condition) if spec is not None and condition is not None else None)

    @torch.inference_mode()
    def decode_codes(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> Any:
        """Decode codes z (n, L), given the condition's one-hot encoding (n, C) for a conditional
        model, in chunks of `scoring.chunk_size`; the kind's decoder output on the CPU."""
        z = z.to(self.device)
        c = None if condition is None else condition.to(self.device)
        chunk = self.manifest.scoring.chunk_size
        parts = [
            self.network.decode_given(z[start : start + chunk], None if c is None else c[start : start + chunk]).cpu()
            for start in range(0, max(len(z), 1), chunk)
        ]
        return parts[0] if len(parts) == 1 else type(parts[0]).cat(parts)

    def sample_condition(self, condition: object, n: int) -> np.ndarray | None:
        """The `condition` of a sample request → (n, V) value positions, or None for a model
        without one. Raises `InputError` (a 422) naming what is absent, unknown or not expected."""
        spec = self.kind.condition_spec()
        if spec is None:
            if condition is not None:
                raise InputError(
                    [
                        InputIssue(
                            ("condition",), "this model is not conditional: send no 'condition'", "extra_forbidden"
                        )
                    ]
                )
            return None
        return spec.sample_index(condition, n)

    def _check_can_sample(self) -> None:
        if not self.family.can_sample:
            raise UnsupportedError(
                f"family {self.family.name!r} cannot sample: {self.family.cannot_sample_reason}", "n", "cannot_sample"
            )

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0, condition: object = None) -> list[Any]:
        """n draws from the generative model as JSON-ready values (records, base64 PNGs); raises
        `UnsupportedError` for a family without one. A conditional model draws x given
        `condition` (see `sample_condition`), and its records carry it."""
        self._check_can_sample()
        given = self.sample_condition(condition, n)
        generator = torch.Generator().manual_seed(seed)
        return self.kind.render_samples(self.decode_prior(n, generator, temperature, given), generator, given)

    def sample_grid(self, n: int, seed: int = 0, temperature: float = 1.0, condition: object = None) -> str:
        """n draws tiled into one base64 PNG (kinds with pictures only)."""
        self._check_can_sample()
        given = self.sample_condition(condition, n)
        generator = torch.Generator().manual_seed(seed)
        return self.kind.render_grid(self.decode_prior(n, generator, temperature, given))

    def warm_up(self) -> np.ndarray:
        """Score a few inputs decoded from random codes, so the first real request does not pay
        for lazy initialisation; returns their scores (a usable model gives finite ones). Decoding a
        code works for every family, including those that cannot sample from a prior."""
        generator = torch.Generator().manual_seed(0)
        spec = self.kind.condition_spec()
        given = spec.first_index(4) if spec is not None else None
        inputs = self.kind.inputs_from_decoded(self.decode_prior(4, generator, 1.0, given), generator, given)
        return self.score(inputs).terms.score


def load_detector(directory: Path, device: str = "auto") -> Detector:
    """The detector of whatever kind and family the artifact in `directory` holds."""
    return Detector.load(directory, device)
