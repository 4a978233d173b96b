"""The model artifact: `manifest.json` (everything but the weights) and `weights.safetensors`.

Nothing is ever unpickled. Saving writes into a temporary directory beside the target and renames
it into place, so a failed save leaves the previous artifact (or nothing) behind. Loading checks the
format version, the manifest's fields and the weights' sha256 before torch sees a byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, SerializeAsAny, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model import __version__
from model.errors import ArtifactError
from model.families import FAMILIES
from model.families.base import FamilyConfig
from model.kinds import KINDS
from model.scoring import ScoringConfig
from model.thresholds import Threshold

FORMAT_VERSION: Literal[2] = 2
"""2: `kind_config` and `family_config` sections (the two axes of `model.kinds` and
`model.families`) replaced the top-level schema / image / network fields of version 1."""
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"


class Manifest(BaseModel):
    """Describes a trained model completely, apart from its weights.

    `kind` and `family` name registered entries of `model.kinds.KINDS` and `model.families.FAMILIES`;
    `kind_config` and `family_config` are validated against the models those entries register
    (a tabular kind's schema and preprocessing, an image kind's geometry; the family's latent size
    and options), so no field here is specific to one kind or family.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: Literal[2] = FORMAT_VERSION
    kind: str
    family: str
    model_id: str
    version: str
    created_at: str
    library_versions: dict[str, str]
    kind_config: SerializeAsAny[BaseModel]
    family_config: SerializeAsAny[FamilyConfig]
    scoring: ScoringConfig
    thresholds: dict[str, Threshold]
    active_threshold: str
    calibration_scores: list[float]
    training: dict[str, Any]
    weights_sha256: str

    @model_validator(mode="before")
    @classmethod
    def _sections_of_registered_models(cls, data: Any) -> Any:
        """Validate each section with the model its kind or family registers."""
        if not isinstance(data, dict):
            return data
        kind, family = data.get("kind"), data.get("family")
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if family not in FAMILIES:
            raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
        data = dict(data)
        for field, model in (
            ("kind_config", KINDS[kind].config_model),
            ("family_config", FAMILIES[family].config_model),
        ):
            section = data.get(field)
            if section is None:
                raise ValueError(f"'{field}' is missing")
            if isinstance(section, BaseModel):
                section = section.model_dump(by_alias=True)
            data[field] = model.model_validate(section)
        return data

    @model_validator(mode="after")
    def _score_method_of_the_family(self) -> Manifest:
        methods = FAMILIES[self.family].score_methods
        if self.scoring.method not in methods:
            raise ValueError(
                f"score method {self.scoring.method!r} is not offered by family {self.family!r} ({', '.join(methods)})"
            )
        return self


def library_versions() -> dict[str, str]:
    return {
        "vae_anomaly": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(directory: Path, manifest_fields: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Manifest:
    """Write weights and manifest atomically into `directory`; returns the manifest written.

    `manifest_fields` holds every `Manifest` field except `model_id`, `weights_sha256` and
    `library_versions`, which are derived here. An existing directory is replaced.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = staging / WEIGHTS
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(weights))
        sha = _sha256(weights)
        manifest = Manifest.model_validate(
            {**manifest_fields, "model_id": sha[:12], "weights_sha256": sha, "library_versions": library_versions()}
        )
        (staging / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=1))
        _publish_permissions(staging)
        if directory.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            try:
                os.replace(directory, retired / directory.name)
            except BaseException:
                retired.rmdir()
                raise
            try:
                os.replace(staging, directory)
            except BaseException:
                os.replace(retired / directory.name, directory)  # put the previous artifact back
                retired.rmdir()
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _publish_permissions(directory: Path) -> None:
    """mkdtemp makes a 0700 directory: give the artifact the modes a plain mkdir would (umask), so
    a server running as another user (a container's non-root user) can read it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        os.chmod(path, 0o666 & ~umask)


def read_manifest(directory: Path) -> Manifest:
    """Read and validate `manifest.json`; raises `ArtifactError` naming the file and the problem."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise ArtifactError(f"{directory}: model directory not found; train one with `vae-anomaly train`")
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; is {directory} a model directory?") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON (truncated or altered?): {exc}") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version!r} is not supported by this release (reads {FORMAT_VERSION}); "
            "retrain the model or upgrade vae-anomaly"
            + (
                " (version 1 predates the kind/family layout: retrain it with `vae-anomaly train`)"
                if version == 1
                else ""
            )
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: invalid manifest: {exc}") from exc


def load_artifact(directory: Path) -> tuple[Manifest, dict[str, torch.Tensor]]:
    """Read the manifest, verify the weights' checksum, then load them with safetensors."""
    manifest = read_manifest(directory)
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing; the model directory is incomplete")
    sha = _sha256(weights)
    if sha != manifest.weights_sha256:
        raise ArtifactError(
            f"{weights}: sha256 {sha[:12]}… does not match the manifest's {manifest.weights_sha256[:12]}… "
            "(truncated, altered, or from another model)"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: unreadable safetensors file: {exc}") from exc
    return manifest, tensors
